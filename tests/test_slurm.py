"""SLURM: the launcher presets, and a real sweep of `facecure` on a one-node SLURM cluster.

The presets name FaceCure's launchers (hydra_plugins/facecure_launchers, facecure/launchers.py):
hydra-submitit-launcher's, except that a job that dies hard is recorded (error.txt) instead of
stopping the sweep. The `slurm` tests start the cluster of scripts/slurm_cluster.py (installed
with apt-get when missing; root only) and run a three-job sweep through `hydra/launcher=slurm`:
first a job that kills itself with SIGKILL, then two tiny real runs. The sweep must wait for all
three, bring the finished jobs' results back, record the killed job and exit 1 (SweepSummary)
within a timeout.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TINY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from facecure.paths import CONF_DIR, PROJECT_ROOT
from facecure.results import read_results

SWEEP_TIMEOUT_S = 240  # the sweep takes well under a minute: past this it hangs


def load_cluster_module():
    path = PROJECT_ROOT / "scripts" / "slurm_cluster.py"
    spec = importlib.util.spec_from_file_location("slurm_cluster", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["slurm_cluster"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def compose_sweep(*overrides):
    """The sweep's master config as Hydra composes it, and a Hydra context to load job configs."""
    from hydra.core.utils import HydraContext

    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
    cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)
    return cfg, context


@pytest.mark.parametrize("launcher, target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_launcher_presets_compose(launcher, target):
    from hydra.core.plugins import Plugins
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as stock

    try:
        cfg, context = compose_sweep(f"hydra/launcher={launcher}", "experiment_name=x",
                                     "hydra.launcher.timeout_min=7")
        # As Hydra builds the launcher: only a plugin of the hydra_plugins namespace passes.
        launcher_obj = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=lambda cfg: None, config=cfg)
    finally:
        GlobalHydra.instance().clear()
    assert type(launcher_obj).__module__ == "hydra_plugins.facecure_launchers"
    assert type(launcher_obj).__name__ == target
    # A subclass of the stock launcher (by name: Hydra's plugin scan re-executes its module).
    assert f"{stock.__name__}.{target}" in [f"{c.__module__}.{c.__name__}"
                                            for c in type(launcher_obj).__mro__]
    params = launcher_obj.params
    assert params["timeout_min"] == 7 and params["name"] == "facecure-x"
    assert params["submitit_folder"].endswith("/multirun/x/.submitit/%j")
    if launcher == "slurm":
        assert params["gpus_per_node"] == 1 and params["partition"] is None
        assert "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in params["setup"][0]


class FakeJob:
    """A submitit job as the launcher sees it once it has ended."""

    def __init__(self, folder, job_id, outcome, state="COMPLETED"):
        from submitit.core.utils import JobPaths

        self.job_id, self.state, self.outcome = job_id, state, outcome
        self.paths = JobPaths(folder / job_id, job_id=job_id, task_id=0)

    def results(self):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return [self.outcome]


@pytest.mark.parametrize("fail_fast", [False, True])
def test_launcher_records_jobs_that_died_hard(tmp_path, fail_fast):
    """The launcher's collection, with submitit's jobs faked: a job that died hard (first) and
    one that failed in Hydra's job setup are recorded in their folders; the others come back."""
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from facecure.launchers import collect
    from facecure.sweep import sweep_status

    sweep = tmp_path / "sweep"
    finished = JobReturn(overrides=["attack=pgd"], status=JobStatus.COMPLETED)
    finished.return_value = None
    logs = tmp_path / "sweep" / ".submitit"
    jobs = [FakeJob(logs, "7_0", UncompletedJobError("Job 7_0 has not produced any output "
                                                     "(state: OUT_OF_MEMORY)\nKilled"),
                    state="OUT_OF_MEMORY"),
            FakeJob(logs, "7_1", finished),
            FakeJob(logs, "7_2", FailedJobError("Job (task=0) failed during processing with "
                                                "trace:\nValueError: bad"), state="FAILED")]
    overrides = [["attack=fawkes_v10"], ["attack=pgd"], ["attack=lowkey"]]
    try:
        cfg, context = compose_sweep("hydra/launcher=local", f"hydra.sweep.dir={sweep}",
                                     f"fail_fast={fail_fast}")
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=lambda cfg: None, config=cfg)
        if fail_fast:  # the sweep stops at the first failure, as with the stock launcher
            with pytest.raises(UncompletedJobError):
                collect(launcher, jobs, overrides, 0)
            assert (sweep / "attack=fawkes_v10" / "error.txt").exists()
            return
        returns = collect(launcher, jobs, overrides, 0)
    finally:
        GlobalHydra.instance().clear()
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 3
    assert [r.return_value for r in returns] == [None] * 3  # Hydra's sweeper does not raise
    assert returns[1] is finished
    killed = (sweep / "attack=fawkes_v10" / "error.txt").read_text()
    assert "died without a traceback (local job 7_0, state OUT_OF_MEMORY)" in killed, killed
    assert str(logs / "7_0" / "7_0_0_log.err") in killed and "Killed" in killed
    assert killed.strip().splitlines()[-1].startswith("died without a traceback")
    setup = (sweep / "attack=lowkey" / "error.txt").read_text()
    assert "failed before the app ran" in setup and "ValueError: bad" in setup
    # The jobs never wrote .hydra/: the launcher did, so SweepSummary finds them.
    assert OmegaConf.load(sweep / "attack=fawkes_v10" / ".hydra" / "overrides.yaml") == ["attack=fawkes_v10"]
    assert OmegaConf.load(sweep / "attack=fawkes_v10" / ".hydra" / "config.yaml").attack.name \
        == "fawkes_v10"
    assert sorted(sweep_status(sweep)["failed"]) == ["attack=fawkes_v10", "attack=lowkey"]


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node cluster for the session; every daemon it started is stopped by PID after."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster runs its daemons as root (and installs with apt-get)")
    module = load_cluster_module()
    if module.missing_programs() and shutil.which("apt-get") is None:
        pytest.skip(f"Slurm is not installed ({', '.join(module.missing_programs())} missing) "
                    "and there is no apt-get to install it")
    root = Path(tempfile.mkdtemp(prefix="facecure-slurm-"))
    started = time.time()
    cluster = None
    try:
        cluster = module.start(root)
        cluster.timings["fixture_s"] = round(time.time() - started, 2)
        print(f"\nSLURM cluster up in {cluster.timings}")
        yield cluster
    finally:
        pids = dict(cluster.pids) if cluster is not None else {}
        if cluster is not None:
            cluster.stop(remove=True)
        shutil.rmtree(root, ignore_errors=True)
        still = [f"{name} ({pid})" for name, pid in pids.items() if module.alive(pid)]
        assert not still, f"daemons still running after stop: {still}"
        assert not root.exists()


# An "attack" whose construction kills the job's own process: a job that dies hard, leaving no
# traceback and no result file (only SLURM's accounting knows it ended).
SIGKILL_ATTACK = """\
_target_: builtins.dict
name: sigkill
kill:
  _target_: signal.raise_signal
  _args_: [9]
steps: null
image_size: null
surrogates: []
"""


@pytest.mark.slow
@pytest.mark.slurm
def test_sweep_on_slurm_returns_results_and_reports_a_killed_job(slurm_cluster, tmp_path):
    cluster = slurm_cluster
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "attack").mkdir()
    # The tiny settings as an experiment, so job folders are named by the swept attack only.
    tiny = OmegaConf.to_yaml(OmegaConf.from_dotlist([o for o in TINY]))
    (conf / "experiment" / "tiny.yaml").write_text("# @package _global_\n" + tiny)
    (conf / "attack" / "sigkill.yaml").write_text(SIGKILL_ATTACK)
    sweep = tmp_path / "sweep"
    cache = tmp_path / "cache"
    env = {**cluster.env, "FACECURE_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "-m", "facecure.cli", "--config-dir", str(conf), "-m",
           "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
           "hydra.launcher.timeout_min=10", "experiment=tiny", "logger=none",
           "attack=sigkill,fawkes_v10,pgd", f"hydra.sweep.dir={sweep}"]

    started = time.time()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=SWEEP_TIMEOUT_S, cwd=tmp_path)
    except subprocess.TimeoutExpired as hang:
        out = (hang.stdout or b"").decode()[-3000:] + (hang.stderr or b"").decode()[-3000:]
        pytest.fail(f"the sweep hung (> {SWEEP_TIMEOUT_S} s); squeue: {cluster.jobs()}\n{out}")
    sweep_s = time.time() - started
    assert cluster.wait_jobs(60), f"jobs left in the queue: {cluster.jobs()}"
    print(f"\nsweep of 3 jobs on SLURM: {sweep_s:.1f} s (cluster start {cluster.timings})\n"
          + cluster.client("sacct", "-X", "-o", "JobID,JobName%20,State,Start,End,Elapsed"))

    # Every job was waited for; SweepSummary ran, named the killed job and failed the command.
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "2 jobs finished, 1 failed" in output, output[-3000:]
    assert "died without a traceback (slurm job" in output, output[-3000:]

    # sacct: the first task of the array failed, the two others completed.
    for _ in range(20):  # the controller sends job records to slurmdbd asynchronously
        states = {job: state for job, state in cluster.job_states().items() if "_" in job}
        if sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"]:
            break
        time.sleep(0.5)
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"], states
    assert [state for job, state in states.items() if job.endswith("_0")] == ["FAILED"], states

    # Every finished job's results came back into its own folder of the sweep.
    folders = {}
    for overrides in sweep.rglob(".hydra/overrides.yaml"):
        attack = [o for o in OmegaConf.load(overrides) if o.startswith("attack=")]
        folders[attack[0].split("=", 1)[1]] = overrides.parent.parent
    assert set(folders) == {"fawkes_v10", "pgd", "sigkill"}, folders
    for attack in ("fawkes_v10", "pgd"):
        records = read_results(folders[attack] / "results.jsonl")
        aggregates = [r for r in records if r["kind"] == "aggregate"]
        assert {r["attack"] for r in aggregates} >= {attack}, aggregates
        assert not (folders[attack] / "error.txt").exists()

    # The killed job: no results, an error.txt with its state and logs, named in failed_jobs.txt.
    killed = folders["sigkill"]
    assert not (killed / "results.jsonl").exists()
    error = (killed / "error.txt").read_text()
    assert "died without a traceback" in error and "state FAILED" in error, error
    failed = (sweep / "failed_jobs.txt").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith(f"{killed.name}: died without a traceback")
    # submitit's logs of the killed job are where the preset puts them, and error.txt says
    # where: srun saw it killed.
    logs = list((sweep / ".submitit").glob("*_0/*_0_0_log.err"))
    assert logs and "Killed" in logs[0].read_text(), logs
    assert str(logs[0]) in error, error
