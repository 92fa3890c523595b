"""Every experiment config composes, with every job of its sweep."""
import itertools

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from facecure.paths import PROJECT_ROOT

EXPERIMENTS = sorted(p.stem for p in (PROJECT_ROOT / "experiments").glob("*.yaml"))


def sweep_jobs(name: str) -> list[list[str]]:
    """The override lists of the sweep an experiment declares (hydra.sweeper.params)."""
    cfg = OmegaConf.load(PROJECT_ROOT / "experiments" / f"{name}.yaml")
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    axes = [[f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()]
    return [list(job) for job in itertools.product(*axes)]


def test_every_paper_experiment_has_a_config():
    for name in ("baseline", "adaptive", "detection", "oblivious", "clip_finetune", "combined",
                 "unprotected", "classifiers", "transfer_time", "pubfig"):
        assert name in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_and_its_sweep_compose(name, cache_dir):
    from facecure.paths import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for job in sweep_jobs(name):
            cfg = compose("config", overrides=[f"experiment={name}", *job], return_hydra_config=True)
            choices = cfg.hydra.runtime.choices
            assert cfg.experiment_name == name
            # every interpolation of the job's own config resolves
            OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
            for override in job:
                key, value = override.split("=")
                got = choices[key] if key in choices else OmegaConf.select(cfg, key)
                assert str(got).lower() == value.lower()
    GlobalHydra.instance().clear()
