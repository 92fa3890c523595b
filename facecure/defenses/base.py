"""The defense interface: what a model trainer does against poisoned pictures.

A defense is a class named by `_target_` in `conf/defense/<name>.yaml`, its settings the
constructor's arguments (their values live in the yaml only), and `run(ctx)` its measurement:
a list of `Defended` (scored systems) and dicts (records of their own kind, e.g. the detector's).
`public_fraction` is the share of identities the trainer owns as public users (never attackers,
never scored); a defense that trains on none leaves it at 0.
"""
from __future__ import annotations

import abc

from facecure.defenses.context import Defended, DefenseContext


class Defense(abc.ABC):
    name = "defense"          # the records' `defense` label
    public_fraction = 0.0

    @abc.abstractmethod
    def run(self, ctx: DefenseContext) -> list[Defended | dict]:
        """The systems this defense scored, and records of their own kind."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class NoDefense(Defense):
    """The paper's baseline: the 1-NN over the trainer's extractor, as it is."""

    name = "none"

    def run(self, ctx: DefenseContext) -> list[Defended]:
        base = ctx.extractor
        return [Defended(ctx.protection(base), "none", base.name, base.fingerprint)]
