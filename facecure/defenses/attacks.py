"""Attacks a defense calls as black boxes, by config name (`conf/attack/<name>.yaml`).

The adaptive trainer of the paper perturbs its public users with the protection tools it can
download, one or several at once; these configs are composed like the run's own attack (a
`mixed` attack's defaults included) and resolved against the run's config (seed, data size,
paths), so the same attack config gives the same perturbed-store fingerprint everywhere.
"""
from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict

from facecure.attacks.base import Attack
from facecure.config_groups import compose_group


def attack_config(ctx, name: str | DictConfig | dict, **overrides) -> DictConfig:
    """The resolved config of attack `name` (or an attack config itself) in this run's context."""
    if isinstance(name, str):
        node = compose_group("attack", name)
    else:
        node = OmegaConf.create(name)
    root = copy.deepcopy(ctx.cfg)
    with open_dict(root):
        root.attack = OmegaConf.merge(node, overrides)
    OmegaConf.resolve(root)
    return root.attack


def build_named_attack(ctx, name, **overrides):
    """Instantiate attack `name` with surrogates from the run's extractor pool."""
    return build_attack_config(ctx, attack_config(ctx, name, **overrides))


def build_attack_config(ctx, config: DictConfig) -> Attack:
    """Instantiate a resolved attack config with surrogates from the run's extractor pool."""
    from facecure.app import build_attack  # the app imports defenses: import on use
    return build_attack(config, ctx.pool)


def attack_label(cfg: DictConfig | dict) -> str:
    """How records name an attack: a tool's own label, else name/mode (fawkes_v10/high)."""
    if cfg.get("label"):
        return str(cfg["label"])
    return cfg["name"] + (f"/{cfg['mode']}" if cfg.get("mode") else "")


def named_attacks(ctx, entries) -> list[tuple[str, Attack]]:
    """(label, attack) per entry: an attack config name, "name/mode" (e.g. fawkes_v10/low), or
    a dict {name: ..., <config overrides>}, or a list of them; null: the run's own attack."""
    if entries is None:
        return [(attack_label(ctx.cfg.attack), ctx.attack)]
    if isinstance(entries, (str, dict)):
        entries = [entries]
    out = []
    for entry in entries:
        if isinstance(entry, str):
            name, _, mode = entry.partition("/")
            overrides = {"mode": mode} if mode else {}
        else:
            overrides = dict(entry)
            name = overrides.pop("name")
        config = attack_config(ctx, name, **overrides)  # composed once, for label and attack
        out.append((attack_label(config), build_attack_config(ctx, config)))
    return out
