"""FaceCure's submitit launchers, as Hydra plugins (Hydra instantiates a launcher only from the
`hydra_plugins` namespace package; keep it without an `__init__.py`). The stock launchers of
hydra-submitit-launcher, except that `launch` waits for every job and records the jobs that died
hard instead of stopping the sweep at the first: see facecure/launchers.py. Imported by Hydra's
plugin scan at every start: keep it light (facecure is imported when a sweep launches)."""
from __future__ import annotations

from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _stock


class SlurmLauncher(_stock.SlurmLauncher):
    """`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml)."""

    def launch(self, job_overrides, initial_job_idx):
        from facecure.launchers import launch_every_job

        return launch_every_job(self, job_overrides, initial_job_idx)


class LocalLauncher(_stock.LocalLauncher):
    """`hydra/launcher=local` (conf/hydra/launcher/local.yaml)."""

    def launch(self, job_overrides, initial_job_idx):
        from facecure.launchers import launch_every_job

        return launch_every_job(self, job_overrides, initial_job_idx)
