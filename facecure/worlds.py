"""The worlds (conf/world): which model plays each of the paper's models.

The experiments name the paper's models by role (`webface`, `celeb1m`, `magface`, `clip`);
`world=embedded` casts the zoo trained here, `world=real` the published face models. Records
carry the world and each model's role, so the report says where a row comes from and
`facecure-report <real> --compare <embedded>` meets rows of the two worlds on their roles.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

from facecure.config_groups import compose_group


def world_name(cfg: Mapping) -> str:
    """The run's world; configs older than worlds ran in the embedded one."""
    return str((cfg.get("world") or {}).get("name") or "embedded")


def record_world(record: Mapping) -> str:
    """A record's or report row's world; those written before worlds are embedded ones."""
    return str(record.get("world") or "embedded")


def role_of(world: Mapping | None, extractor: str) -> str | None:
    """The paper's model that `extractor` plays in `world` (`dlib+robust` -> `webface+robust`:
    a fine-tune keeps its base's role), or None when it plays none."""
    base, plus, rest = extractor.partition("+")
    for role, name in ((world or {}).get("roles") or {}).items():
        if name == base:
            return role + plus + rest
    return None


@functools.cache
def world_config(name: str) -> Mapping:
    """conf/world/<name>.yaml (roles, surrogates, eras), for records that do not carry their
    roles (written before worlds)."""
    return compose_group("world", name)


def row_role(row: Mapping) -> str | None:
    """A record's or report row's role: its own, else its world's casting of its extractor."""
    if row.get("extractor_role"):
        return str(row["extractor_role"])
    return role_of(world_config(record_world(row)), str(row.get("extractor", "")))


def unavailable(extractor_cfg: Mapping) -> str | None:
    """Why the run's model does not exist in this world (conf/extractor/real/clip.yaml), if so."""
    reason = extractor_cfg.get("unavailable")
    return " ".join(str(reason).split()) if reason else None
