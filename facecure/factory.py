"""One way to build each thing a run needs from its config: extractors, attacks, defenses.

Every group config is read by name through `compose_group` (the run's search path and defaults
lists followed, so a user's own folder works everywhere) and resolved in the run's context by
`resolve_in`. The `Factory` is handed to defenses (`DefenseContext.build`) so that they build
the attacks and extractors they need exactly as the run builds its own; nothing below
`facecure.app` imports this module.
"""
from __future__ import annotations

import inspect
import json
import logging
from typing import Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from facecure.attacks.base import Attack, attack_label
from facecure.config_groups import compose_group, resolve_in
from facecure.defenses.base import Defense, NoDefense
from facecure.extractors.base import Extractor
from facecure.extractors.registry import extractor_config, instantiate_extractor
from facecure.utils.io import fingerprint

log = logging.getLogger(__name__)

ATTACK_RUN_KEYS = ("name", "batch_size", "unprotected")  # read by the run, not the attack
# Hydra's own instantiation keys: not settings (a config may call any callable with them).
HYDRA_KEYS = {"_target_", "_args_", "_partial_", "_convert_", "_recursive_"}


def _container(spec) -> Any:
    if isinstance(spec, (DictConfig, ListConfig)):
        return OmegaConf.to_container(spec, resolve=True)
    return spec


def _parameters(target):
    """The target's parameters; None for a builtin without a signature to check against."""
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None


def _check_settings(kind: str, name: str, target, spec: dict, allowed: set[str]) -> None:
    """A setting the constructor does not take is a typo or another object's setting: say so
    (Hydra's own TypeError names neither the config nor what it takes)."""
    takes = _parameters(target)
    if takes is None or any(p.kind == p.VAR_KEYWORD for p in takes.values()):
        return
    unknown = sorted(set(spec) - set(takes) - HYDRA_KEYS - allowed)
    if unknown:
        raise ValueError(f"{kind} {name!r} has no setting {', '.join(unknown)} (a typo, or an "
                         f"experiment or override set it for another {kind}); it takes "
                         f"{', '.join(sorted(set(takes) - {'self'}))}")


def create_attack(spec: DictConfig | dict, pool: ExtractorPool) -> Attack:
    """Instantiate an attack config; surrogate names become built extractors, and every nested
    object with a `_target_` (a mixed attack's parts, a user's own attack) is built the same way."""
    spec = dict(_container(spec))
    name = spec.get("name", spec.get("_target_"))
    spec = {k: v for k, v in spec.items() if k not in ATTACK_RUN_KEYS}
    target = get_object(spec["_target_"])
    takes = _parameters(target)
    if "label" in spec and takes is not None and "label" not in takes:
        spec.pop("label")  # a run key (attack_label in the records) unless the attack takes it
    _check_settings("attack", name, target, spec, {"surrogate_sets"})
    names, sets = spec.pop("surrogates", None), spec.pop("surrogate_sets", None)
    if names is None and sets is not None:
        names = sets[spec["mode"]]
    if names is not None:
        spec["surrogates"] = [pool.get(n) for n in names]
    for key, value in spec.items():
        if isinstance(value, dict) and "_target_" in value:
            spec[key] = create_attack(value, pool)
        elif isinstance(value, list) and any(isinstance(v, dict) and "_target_" in v for v in value):
            spec[key] = [create_attack(v, pool) if isinstance(v, dict) and "_target_" in v else v
                         for v in value]
    # Built here, not by Hydra's instantiate: it would turn the objects built above (a data set
    # of dataclasses) back into configs. Hydra's own keys still mean what they mean in Hydra.
    if set(spec) & (HYDRA_KEYS - {"_target_", "_args_"}):
        attack = instantiate(spec)
    else:
        kwargs = {k: v for k, v in spec.items() if k not in HYDRA_KEYS}
        attack = target(*spec.get("_args_", ()), **kwargs)
    if spec.get("surrogates"):  # real photos: the attack cloaks its surrogates' crop
        attack.crop_spec = surrogates_crop(name, spec["surrogates"])
    return attack


def surrogates_crop(attack: str, surrogates: list[Extractor]) -> dict:
    """The one crop an attack's surrogates share (each gets the cloaked crop as it is)."""
    specs = {json.dumps(s.crop_spec, sort_keys=True): s.crop_spec for s in surrogates}
    if len(specs) > 1:
        by = ", ".join(f"{s.name}: {s.crop_spec['kind']}" for s in surrogates)
        raise ValueError(f"attack {attack!r}: its surrogates are trained on different crops "
                         f"({by}); one cloak is made on one crop, so choose surrogates that "
                         "share one")
    return next(iter(specs.values()))


def create_defense(spec: DictConfig | dict | None) -> Defense:
    """Instantiate a defense config (`conf/defense/<name>.yaml`): its `_target_` class with
    its settings as constructor arguments; None or a config without `_target_`: no defense."""
    spec = dict(_container(spec) or {})
    if not spec.get("_target_"):
        if spec.get("name") not in (None, "none"):
            raise ValueError(f"defense {spec['name']!r} has no _target_: a defense config names "
                             "its class (e.g. _target_: facecure.defenses.robust.RobustTraining)")
        return NoDefense()
    name = spec.pop("name", None) or spec["_target_"]
    target = get_object(spec["_target_"])
    _check_settings("defense", name, target, spec, set())
    defense = instantiate(spec, _convert_="all")
    if not isinstance(defense, Defense):
        raise TypeError(f"defense {name!r}: {spec['_target_']} is not a facecure Defense")
    return defense


class ExtractorPool:
    """Builds each extractor once per run: the trainer's extractor may also be a surrogate."""

    def __init__(self, cfg: DictConfig, device: str):
        self.cfg, self.device = cfg, device
        self._built: dict[str, Extractor] = {}

    def get(self, name: str | None = None, **overrides) -> Extractor:
        """Extractor `name` (None: the run's), its config keys replaced by `overrides`."""
        name = name or self.cfg.extractor.name
        key = name + (f"-{fingerprint(overrides)}" if overrides else "")
        if key not in self._built:
            cfg = (self.cfg.extractor if name == self.cfg.extractor.name and not overrides
                   else extractor_config(name, self.cfg, **overrides))
            # Extractors FaceCure trains (the zoo) take the run's Lightning trainer settings.
            extra = ({"trainer": OmegaConf.to_container(self.cfg.trainer, resolve=True)}
                     if "trainer" in cfg and "trainer" in self.cfg else {})
            extractor = instantiate_extractor(cfg, **extra)
            self._built[key] = extractor.to(self.device)
        return self._built[key]


class Factory(ExtractorPool):
    """The run's builder: extractors by name (built once), attacks and defenses by config name
    or config node, all resolved in the run's config."""

    def attack_config(self, name: str | DictConfig | dict, **overrides) -> DictConfig:
        """The resolved config of attack `name` (or an attack config itself) in this run."""
        node = compose_group("attack", name) if isinstance(name, str) else OmegaConf.create(name)
        return resolve_in(self.cfg, "attack", node, overrides)

    def attack(self, spec: str | DictConfig | dict, **overrides) -> Attack:
        return create_attack(self.attack_config(spec, **overrides), self)

    def named_attacks(self, entries) -> list[tuple[str, Attack]]:
        """(label, attack) per entry: an attack config name, "name/mode" (e.g. fawkes_v10/low),
        a dict {name: ..., <config overrides>}, or a list of them. Each is composed once."""
        if isinstance(entries, (str, dict, DictConfig)):
            entries = [entries]
        out = []
        for entry in entries:
            if isinstance(entry, str):
                name, _, mode = entry.partition("/")
                overrides = {"mode": mode} if mode else {}
            else:
                overrides = dict(_container(entry))
                name = overrides.pop("name")
            config = self.attack_config(name, **overrides)
            out.append((attack_label(config), create_attack(config, self)))
        return out

    def defense_config(self, name: str | DictConfig | dict, **overrides) -> DictConfig:
        node = compose_group("defense", name) if isinstance(name, str) else OmegaConf.create(name)
        return resolve_in(self.cfg, "defense", node, overrides)

    def defense(self, spec: str | DictConfig | dict | None, **overrides) -> Defense:
        """Defense `spec` (a config name or node; None: no defense), resolved in this run."""
        if spec is None:
            return NoDefense()
        return create_defense(self.defense_config(spec, **overrides))

    def extractor(self, spec: str | dict | None = None) -> Extractor:
        """An extractor by config name, or {name: ..., <overrides of its config>}; None: the
        run's own."""
        if spec is None or isinstance(spec, str):
            return self.get(spec)
        overrides = dict(_container(spec))
        return self.get(overrides.pop("name"), **overrides)
