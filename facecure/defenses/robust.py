"""`defense=robust`: the adaptive model trainer (paper Sec. 4, App. B.4).

The trainer has black-box access to the protection tools: it perturbs its public users'
pictures with them (`train_attacks`, one or several; null: the run's own attack), then
fine-tunes its extractor end to end with a linear head over the public users, on clean
pictures and their perturbed twins (cross-entropy, random horizontal flips, a user drawn
uniformly then one of their pictures, as the released `train_robust_features.py`). The head
is thrown away; the fine-tuned extractor is the robust extractor, scored by the same 1-NN.

The paper (and the design) say 500 steps of batch 32; the released script's default runs 10
"epochs" of 500 steps. Training is resumable (a checkpoint every `checkpoint_every` steps) and
the result is cached under `ctx.cache_dir` by a fingerprint of everything that shapes it.
The fine-tuning itself is `facecure.defenses.fine_tuning`, shared with `defense=end_to_end`.
"""
from __future__ import annotations

from facecure.defenses.base import Defense
from facecure.defenses.context import Defended, DefenseContext
from facecure.defenses.fine_tuning import (
    RECIPE_VERSION,
    FineTuner,
    PictureSet,
    fine_tune,
    public_pairs,
    recipe_of,
    train_attacks,
    trainable_copy,
)
from facecure.defenses.validation import validation_records, validation_users
from facecure.extractors.base import Extractor


class RobustTraining(Defense):
    """The adaptive trainer: its extractor fine-tuned on public users' clean + perturbed
    pictures (settings: conf/defense/robust.yaml), scored by 1-NN beside the base extractor."""

    name = "robust"

    def __init__(self, *, public_fraction: float, train_attacks, steps: int, batch_size: int,
                 lr_backbone: float, lr_head: float, weight_decay: float, flip: bool,
                 freeze_bn: bool, checkpoint_every: int, validation_users: int,
                 ce_weight: float, distill_weight: float, pair_weight: float):
        self.public_fraction, self.train_attacks = public_fraction, train_attacks
        self.settings = {"steps": steps, "batch_size": batch_size, "lr_backbone": lr_backbone,
                         "lr_head": lr_head, "weight_decay": weight_decay, "flip": flip,
                         "freeze_bn": freeze_bn, "checkpoint_every": checkpoint_every,
                         "validation_users": validation_users, "ce_weight": ce_weight,
                         "distill_weight": distill_weight, "pair_weight": pair_weight}

    @property
    def invariance(self) -> bool:
        return bool(self.settings["distill_weight"] or self.settings["pair_weight"])

    def robust_extractor(self, ctx: DefenseContext) -> Extractor:
        """The trainer's extractor fine-tuned on public users' clean + perturbed pictures."""
        settings, base = self.settings, ctx.extractor
        if not ctx.public.identities:
            raise ValueError("defense=robust needs public users: set defense.public_fraction > 0")
        attacks = train_attacks(ctx, self.train_attacks)
        held_out = set(validation_users(ctx, settings["validation_users"]))
        key = {"base": base.fingerprint, "recipe": recipe_of(settings), "seed": ctx.seed,
               "attacks": [a.fingerprint for a in attacks],
               "public": sorted(p.key for p in ctx.public_pictures()),
               "version": RECIPE_VERSION}
        robust = trainable_copy(base, "robust")
        kind = "robust_invariant" if self.invariance else "robust"

        def prepare() -> tuple[FineTuner, PictureSet]:  # only when the fine-tune is not cached
            groups, sources = public_pairs(ctx, attacks)
            groups = {user: pictures for user, pictures in groups.items() if user not in held_out}
            data = PictureSet(groups, base.input_size, sources if self.invariance else None)
            return FineTuner(robust, len(data.classes), settings["lr_backbone"],
                             settings["lr_head"], settings["weight_decay"], settings["flip"],
                             settings["freeze_bn"], settings["ce_weight"],
                             settings["distill_weight"], settings["pair_weight"]), data

        fp = fine_tune(prepare, settings, ctx.seed, ctx.cache_dir, f"{base.name}+{kind}", key,
                       robust, ctx.trainer_kwargs)
        robust.name, robust.fingerprint = f"{base.name}+{kind}", f"{base.name}+{kind}-{fp}"
        return robust.eval().requires_grad_(False).to(ctx.device)

    def run(self, ctx: DefenseContext) -> list[Defended | dict]:
        """1-NN protection with the base extractor and with its robust fine-tune (and, with
        `validation_users`, both scored on the held-out public users)."""
        base = ctx.extractor
        robust = self.robust_extractor(ctx)
        n = self.settings["validation_users"]
        validation = validation_records(
            ctx, n, ctx.named_attacks(self.train_attacks),
            [("none", base), ("robust", robust)]) if n else []
        return [Defended(ctx.protection(base), "none", base.name, base.fingerprint),
                Defended(ctx.protection(robust), "robust", robust.name, robust.fingerprint,
                         {"robust_extractor": robust.name}), *validation]
