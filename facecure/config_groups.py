"""A config of one group (attack, defense, extractor) composed by name, as the run composes its
own: from `conf/`, and inside the Hydra app from the run's search path too, so configs a user
keeps in their own folder (`hydra.searchpath=[file://<folder>]`) are found everywhere.

`compose_group` is the one way a group config is read by name (defaults lists followed);
`resolve_in` the one way such a node is resolved in a run's context (its paths, seed, data)."""
from __future__ import annotations

import copy
import functools

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict

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


def _compose(overrides: list[str]) -> DictConfig:
    if in_app():
        return compose("config", overrides=[*overrides, *_searchpath()])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def compose_group(group: str, name: str) -> DictConfig:
    """Config `name` of config group `group` as Hydra composes it (its defaults list followed,
    interpolations left for the caller to resolve); KeyError naming the known ones."""
    try:
        return _compose([f"{group}={name}"])[group]
    except MissingConfigException:
        known = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise KeyError(f"unknown {group} {name!r}; known: {', '.join(known)} (and any under "
                       "hydra.searchpath)") from None


@functools.cache
def default_root() -> DictConfig:
    """The default composed config: the context of a group config built outside a run."""
    return _compose([])


def resolve_in(root: DictConfig | None, group: str, node: DictConfig | dict,
               overrides: dict | DictConfig | None = None) -> DictConfig:
    """`node` (with `overrides` merged in) resolved as `root.<group>` would be: its
    interpolations (`${paths.cache_dir}`, `${seed}`, `${data.image_size}`) read the run's
    values. `root` None: the default config's."""
    root = copy.deepcopy(default_root() if root is None else root)
    # Not struct: a key the config lacks reaches the constructor, whose error names it.
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=False))
    with open_dict(root):
        root[group] = OmegaConf.merge(node, overrides or {})
    OmegaConf.resolve(root)
    return root[group]
