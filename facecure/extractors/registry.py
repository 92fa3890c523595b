"""`create_extractor(name, **overrides)`: the config folder `conf/extractor/` is the registry.

Each `conf/extractor/<name>.yaml` has a `_target_` factory and its defaults, so the Hydra app and
library users build an extractor from the same single description. An `info` block says what
the extractor stands for (`role`, `date` as YYYY-MM so sweeps order eras, `weights` published
at); it is metadata, never passed to the factory.
"""
from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from facecure.config_groups import compose_group, default_root, resolve_in
from facecure.extractors.base import Extractor
from facecure.paths import CONF_DIR


def list_extractors() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "extractor").glob("*.yaml"))


def extractor_config(name: str, root: DictConfig | None = None, **overrides: Any) -> DictConfig:
    """The composed config of extractor `name` (`conf/extractor/` or the run's search path,
    defaults lists followed), `overrides` merged in, resolved in `root`'s context (a run's
    config: its paths; None: the default config's)."""
    node = OmegaConf.create(OmegaConf.to_container(compose_group("extractor", name)))
    return resolve_in(root, "extractor", node, overrides)


def instantiate_extractor(cfg: DictConfig, **kwargs: Any) -> Extractor:
    """Instantiate an extractor config; its `info` block (role, date, ...) is not an argument,
    and its `crop` becomes the extractor's `crop_spec`."""
    from facecure.faces import crop_spec_of

    spec = OmegaConf.to_container(cfg, resolve=True)
    spec.pop("info", None)
    crop = crop_spec_of({"crop": spec.pop("crop", None)})
    try:
        extractor = instantiate(spec, **kwargs, _convert_="all")
        extractor.crop_spec = crop  # the crop it gets of a real photo (facecure.faces)
        return extractor
    except InstantiationException as err:
        # Hydra wraps the factory's own error ("weights missing at ..."); show that one.
        if isinstance(err.__cause__, (OSError, ValueError, KeyError, RuntimeError)):
            raise err.__cause__ from None
        raise


def create_extractor(name: str, paths: DictConfig | dict | None = None, **overrides: Any) -> Extractor:
    """Build extractor `name` (e.g. "zoo_softmax"); keyword overrides replace config keys,
    `paths` the default config's paths (where weights and caches are)."""
    root = None
    if paths is not None:
        root = OmegaConf.merge(default_root(), {"paths": paths})
    return instantiate_extractor(extractor_config(name, root, **overrides))
