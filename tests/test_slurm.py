"""SLURM: the launcher presets, and a real sweep of `facecure` on a one-node SLURM cluster.

The `slurm` tests start the cluster of scripts/slurm_cluster.py (installed with apt-get when
missing; root only) and run a three-job sweep through `hydra/launcher=slurm`: two tiny real
runs and one job that kills itself with SIGKILL. The finished jobs' results must come back and
the killed job must be reported as failed (accounting tells submitit it died) within a timeout.
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
from hydra.utils import instantiate
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


@pytest.mark.parametrize("launcher, target", [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_launcher_presets_compose(launcher, target):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"hydra/launcher={launcher}", "experiment_name=x",
                                               "hydra.launcher.timeout_min=7"],
                          return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            launcher_obj = instantiate(cfg.hydra.launcher)  # as Hydra builds the launcher
    finally:
        GlobalHydra.instance().clear()
    assert type(launcher_obj).__name__ == target
    params = launcher_obj.params
    assert params["timeout_min"] == 7 and params["name"] == "facecure-x"
    assert params["submitit_folder"].endswith("/multirun/x/.submitit/%j")
    if launcher == "slurm":
        assert params["gpus_per_node"] == 1 and params["partition"] is None
        assert "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in params["setup"][0]


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
           "attack=fawkes_v10,pgd,sigkill", f"hydra.sweep.dir={sweep}"]

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

    # The killed job fails the sweep, by name, with the state accounting gave it.
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "has not produced any output" in output and "FAILED" in output, output[-3000:]

    # sacct: two jobs completed, one failed (the array's tasks, in sweep order).
    for _ in range(20):  # the controller sends job records to slurmdbd asynchronously
        states = {job: state for job, state in cluster.job_states().items() if "_" in job}
        if sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"]:
            break
        time.sleep(0.5)
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"], states

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
    assert not (folders["sigkill"] / "results.jsonl").exists()
    # submitit's logs of the killed job are where the preset puts them: srun saw it killed.
    logs = list((sweep / ".submitit").glob("*_2/*_2_0_log.err"))
    assert logs and "Killed" in logs[0].read_text(), logs
