"""Defenses: what a model trainer does against poisoned pictures (paper Sections 4-5, App. C-D).

A defense is a class (`facecure.defenses.base.Defense`) named by `_target_` in
`conf/defense/<name>.yaml`, its settings the constructor's arguments; `run(ctx)` returns
`Defended` systems and records of their own kind (the detector's `"kind": "detector"` rows).
A defense in a user's own folder works the same way (`hydra.searchpath`, examples/).
"""
from facecure.defenses.base import Defense, NoDefense
from facecure.defenses.context import Defended, DefenseContext, split_public

__all__ = ["Defended", "Defense", "DefenseContext", "NoDefense", "split_public"]
