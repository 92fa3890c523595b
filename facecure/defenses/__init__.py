"""Defenses: what a model trainer does against poisoned pictures (paper Sections 4-5, App. C-D).

A defense is a function `run(ctx: DefenseContext) -> list[Defended | dict]`, named in
`conf/defense/<name>.yaml` by `_target_`-free `name` and looked up in `DEFENSES`; dicts are
records written as they are (the detector's `"kind": "detector"` rows).
"""
from __future__ import annotations

import importlib

from facecure.defenses.context import Defended, DefenseContext, split_public

# name -> "module:function", imported on use so a defense's heavy imports cost nothing elsewhere.
DEFENSES = {
    "robust": "facecure.defenses.robust:run",
    "detector": "facecure.defenses.detector:run",
    "clip_finetune": "facecure.defenses.clip_finetune:run",
    "combined": "facecure.defenses.combined:run",
    "linear": "facecure.defenses.classifiers:run_linear",
    "end_to_end": "facecure.defenses.classifiers:run_end_to_end",
}


def defense_runner(name: str):
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose one of none, {', '.join(DEFENSES)}")
    module, function = DEFENSES[name].split(":")
    return getattr(importlib.import_module(module), function)


__all__ = ["DEFENSES", "DefenseContext", "Defended", "defense_runner", "split_public"]
