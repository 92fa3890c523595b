"""Submitit launchers that wait for every job of a sweep, even when some die hard.

hydra-submitit-launcher collects the jobs' results in sweep order and stops at the first job that
left none: a job killed by the scheduler or the system (out of memory, time limit, `scancel`,
SIGKILL, node failure) makes submitit raise `UncompletedJobError`, the sweep command stops there,
later jobs are not waited for and the sweep summary never runs. `launch_every_job` keeps
collecting: a job that died hard gets an `error.txt` in its folder (its scheduler state and where
its submitit logs are) and a `JobReturn` that Hydra accepts, so the sweep goes on and
`facecure.sweep.SweepSummary` lists it as failed and exits 1.

Hydra instantiates launchers only from the `hydra_plugins` namespace: the classes that the presets
(conf/hydra/launcher/{slurm,local}.yaml) name are `hydra_plugins.facecure_launchers.SlurmLauncher`
and `.LocalLauncher`, subclasses of the stock ones whose `launch` is `launch_every_job`.
"""
from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict, read_write

from facecure.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def submit(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """Submits the sweep's jobs as one array job: hydra-submitit-launcher 1.2.0's `launch`, less
    its last line (which collects the results and raises at the first job that died hard)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    assert launcher.config is not None
    assert len(job_overrides) > 0
    params = launcher.params
    init_params = {"folder": params["submitit_folder"]}
    specific_init_keys = {"max_num_timeout"}
    init_params.update(**{f"{launcher._EXECUTOR}_{x}": y for x, y in params.items()
                          if x in specific_init_keys})
    init_keys = specific_init_keys | {"submitit_folder"}
    executor = submitit.AutoExecutor(cluster=launcher._EXECUTOR, **init_params)

    baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{x if x in baseparams else f"{launcher._EXECUTOR}_{x}": y
                                  for x, y in params.items() if x not in init_keys})

    log.info(f"Submitit '{launcher._EXECUTOR}' sweep output dir : {launcher.config.hydra.sweep.dir}")
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in launcher.config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(launcher.config.hydra.sweep.mode), 8))

    job_params: list[Any] = []
    for idx, overrides in enumerate(job_overrides, initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                           Singleton.get_state()))
    return executor.map_array(launcher, *zip(*job_params))


def launch_every_job(launcher: Any, job_overrides: Sequence[Sequence[str]],
                     initial_job_idx: int) -> list[JobReturn]:
    """Submits the jobs, then waits for each in turn; a job that died hard is recorded
    (`record_lost_job`) instead of stopping the sweep (unless `fail_fast=true`)."""
    jobs = submit(launcher, job_overrides, initial_job_idx)
    return collect(launcher, jobs, job_overrides, initial_job_idx)


def collect(launcher: Any, jobs: Sequence, job_overrides: Sequence[Sequence[str]],
            initial_job_idx: int) -> list[JobReturn]:
    from submitit.core.utils import FailedJobError, UncompletedJobError

    returns = []
    for idx, (job, overrides) in enumerate(zip(jobs, job_overrides), initial_job_idx):
        try:
            returns.append(job.results()[0])
        except (UncompletedJobError, FailedJobError) as error:
            returns.append(record_lost_job(launcher, job, list(overrides), idx, error))
            if launcher.config.get("fail_fast", False):
                raise
    return returns


def job_config(launcher: Any, overrides: list[str], idx: int, job_id: str):
    """The job's config and output folder, computed as the job computes them (`run_job`)."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config.hydra.job):
        config.hydra.job.id = job_id
        config.hydra.job.num = idx
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)  # for ${hydra:...} in the folder's name
    try:
        folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        folder = folder / str(OmegaConf.select(config, "hydra.sweep.subdir"))
    finally:
        HydraConfig.instance().cfg = saved
    return config, folder.absolute()


def tail(lines: list[str], head: int = 3, last: int = 40) -> list[str]:
    """submitit's message (its first lines) and the end of the job's stderr, which it quotes."""
    if len(lines) <= head + last + 1:
        return lines
    return [*lines[:head], f"[... {len(lines) - head - last} lines ...]", *lines[-last:]]


def record_lost_job(launcher: Any, job: Any, overrides: list[str], idx: int,
                    error: Exception) -> JobReturn:
    """Writes `error.txt` (and `.hydra/` when the job never got to write it) into the job's
    folder, logs the failure and returns a completed `JobReturn` with no value, as a job whose
    exception `facecure.cli` recorded returns."""
    from submitit.core.utils import FailedJobError

    try:
        state = str(job.state)
    except Exception as e:  # the scheduler may not answer
        state = f"unknown ({type(e).__name__}: {e})"
    logs = Path(job.paths.stderr).parent
    name = " ".join(filter_overrides(overrides)) or f"#{idx}"
    config = None
    try:
        config, folder = job_config(launcher, overrides, idx, str(job.job_id))
    except Exception as e:  # a folder for the summary anyway
        log.warning("job #%d: cannot compute its folder (%s: %s)", idx, type(e).__name__, e)
        folder = Path(str(launcher.config.hydra.sweep.dir)).absolute() / f"job_{idx}"

    scheduler = f"{launcher._EXECUTOR} job {job.job_id}, state {state}"
    hard = not isinstance(error, FailedJobError)  # FailedJobError: raised in Hydra's job setup
    what = "died without a traceback" if hard else "failed before the app ran"
    summary = f"{what} ({scheduler}); logs in {logs}"
    lines = [f"Job #{idx} ({name}) {what} ({scheduler})."]
    if hard:
        lines.append("Its process was ended from outside (out of memory, time limit, scancel, "
                     "SIGKILL, node failure), so there is no Python traceback.")
    lines += [f"submitit logs: {job.paths.stdout}", f"               {job.paths.stderr}",
              "submitit said:", *tail(str(error).strip().splitlines()), "", summary]
    text = "\n".join(lines) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None and config.hydra.output_subdir is not None:
        hydra_dir = folder / str(config.hydra.output_subdir)
        if not (hydra_dir / "config.yaml").exists():  # the job died before it wrote it
            task_cfg = copy.deepcopy(config)
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            hydra_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
            OmegaConf.save(task_cfg, hydra_dir / "config.yaml")
    atomic_write_text(folder / "error.txt", text)
    log.error("job #%d (%s) %s; see %s", idx, name, summary, folder / "error.txt")

    ret = JobReturn(overrides=overrides, working_dir=str(folder),
                    task_name=str(launcher.config.hydra.job.name), status=JobStatus.COMPLETED)
    ret.return_value = None
    return ret
