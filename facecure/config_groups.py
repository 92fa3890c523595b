"""A config of one group (attack, defense, extractor) composed by name, as the run composes its
own: from `conf/`, and inside the Hydra app from the run's search path too, so configs a user
keeps in their own folder (`hydra.searchpath=[file://<folder>]`) are found everywhere."""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

from facecure.paths import CONF_DIR


def in_app() -> bool:
    """Inside the Hydra app (or a test's compose context): its config loader is set up."""
    return GlobalHydra.instance().is_initialized()


def _searchpath() -> list[str]:
    """The run's `hydra.searchpath` as an override, where it has one."""
    try:
        paths = list(HydraConfig.get().searchpath)
    except ValueError:  # Hydra initialised without a running job (tests compose directly)
        return []
    return [f"hydra.searchpath=[{','.join(paths)}]"] if paths else []


def compose_group(group: str, name: str) -> DictConfig:
    """Config `name` of config group `group` as Hydra composes it (its defaults list followed,
    interpolations left for the caller to resolve); KeyError naming the known ones."""
    try:
        if in_app():
            return compose("config", overrides=[f"{group}={name}", *_searchpath()])[group]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[f"{group}={name}"])[group]
    except MissingConfigException:
        known = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise KeyError(f"unknown {group} {name!r}; known: {', '.join(known)} (and any under "
                       "hydra.searchpath)") from None
