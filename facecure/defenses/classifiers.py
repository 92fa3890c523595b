"""`defense=linear` and `defense=end_to_end` (paper App. C.1): a classifier instead of the 1-NN.

The model trainer trains a classifier over the evaluation users on their train pictures, the
attackers' replaced by what they posted (perturbed by the run's attack, all but
`attack.unprotected` of them, as for the 1-NN). `linear`: a linear head on the frozen, cached
embeddings of the trainer's extractor (multinomial logistic regression, full-batch L-BFGS).
`end_to_end`: the extractor fine-tuned with a linear head (`facecure.defenses.robust.FineTuner`,
cached and resumable like the robust extractor). `robust_public: true` uses the public users'
clean pictures and their perturbed twins (`train_attacks`, null: the run's attack) as the paper
does: `linear` sits on the robust extractor (defense=robust's fine-tune on them), `end_to_end`
gets them as extra classes, so that it also learns to see through the perturbation.

Protection rate of an attacker: share of their clean test pictures not classified as them (a
public class counts as an error). Clean accuracy: accuracy on the other users' test pictures.

Attackers alone or all at once (`per_attacker`):
- true (the `linear` default): one classifier per attacker, the other attackers posting clean
  pictures: the paper's "each attacker alone" and the released eval_e2e.py (one training per
  attacker). A linear fit on cached features takes seconds, so 20 of them are affordable.
  Clean accuracy is over every other user, as for the 1-NN.
- false (the `end_to_end` default): one classifier trained while all attackers perturb at
  once; twenty fine-tunes would cost twenty trainings. Clean accuracy is then over the users
  who are not attackers (the other attackers are meant to be misclassified). With 20 of ~265
  FaceScrub evaluation users perturbing, each attacker's classes compete with few others'.
The clean baseline is one more classifier, trained with every attacker posting clean pictures
(the same training set whichever attacker is scored), scored the same way. Linear fits are
deterministic and take seconds, so they are recomputed rather than cached.

Each run also records the 1-NN on the same evaluation users (defense=none), for comparison.
"""
from __future__ import annotations

import abc
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from facecure.data.dataset import Picture
from facecure.defenses.base import Defense
from facecure.defenses.context import Defended, DefenseContext
from facecure.defenses.fine_tuning import (
    RECIPE_VERSION,
    FineTuner,
    PictureSet,
    fine_tune,
    public_groups,
    recipe_of,
    train_attacks,
    trainable_copy,
)
from facecure.evaluation.evaluator import AttackerOutcome
from facecure.evaluation.protection import ProtectionResult

# Classify: (train pictures per class, test pictures) -> predicted class name per test picture.
Classify = Callable[[dict[str, list[Picture]], list[Picture]], np.ndarray]


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float,
               max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (L2 penalty), full batch, L-BFGS from zero: convex, so
    the same data always give the same head."""
    w = torch.zeros(n_classes, x.shape[1], device=x.device, requires_grad=True)
    b = torch.zeros(n_classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def linear_classifier(ctx: DefenseContext, settings: dict, extractor=None) -> Classify:
    """Logistic regression on the cached embeddings of `extractor` (default: the run's)."""
    device = "cuda" if str(ctx.device).startswith("cuda") else "cpu"
    extractor = extractor or ctx.extractor

    def embed(pictures):
        features = ctx.embeddings.embed(extractor, pictures, ctx.progress)
        return torch.from_numpy(features).to(device)

    def classify(groups, test):
        classes = sorted(groups)
        train = [p for c in classes for p in groups[c]]
        y = torch.tensor([k for k, c in enumerate(classes) for _ in groups[c]], device=device)
        w, b = fit_linear(embed(train), y, len(classes), float(settings["weight_decay"]),
                          int(settings["max_iter"]))
        return np.array(classes)[(embed(test) @ w.T + b).argmax(1).cpu().numpy()]

    return classify


def end_to_end_classifier(ctx: DefenseContext, settings: dict) -> Classify:
    base = ctx.extractor
    recipe = recipe_of(settings)

    def classify(groups, test):
        key = {"base": base.fingerprint, "recipe": recipe, "seed": ctx.seed,
               "train": sorted((c, p.key) for c in groups for p in groups[c]),
               "version": RECIPE_VERSION}
        model = trainable_copy(base, "end_to_end")
        data = PictureSet(groups, base.input_size)
        module = FineTuner(model, len(data.classes), settings["lr_backbone"],
                           settings["lr_head"], settings["weight_decay"], settings["flip"],
                           settings["freeze_bn"])
        fine_tune(lambda: (module, data), settings, ctx.seed, ctx.cache_dir,
                  f"{base.name}+end_to_end", key, module, ctx.trainer_kwargs)
        return np.array(data.classes)[module.to(ctx.device).predict(test)]

    return classify


def measure(ctx: DefenseContext, classify: Classify, per_attacker: bool,
            extra_classes: dict[str, list[Picture]]) -> ProtectionResult:
    ids = ctx.split.identities
    test = [p for i in ids for p in ctx.split.test[i]]
    owners = np.array([p.identity for p in test])
    clean = {**{i: ctx.split.train[i] for i in ids}, **extra_classes}
    post = ctx.posted()
    posted = post.pictures

    def outcome(pred, a, others, rows):
        mine = owners == a
        return AttackerOutcome(a, float((pred[mine] != a).mean()),
                               float((pred[others] == owners[others]).mean()), int(mine.sum()),
                               len(rows[a]), post.n_perturbed(a) if rows is posted else 0)

    def others_of(a):
        return owners != a if per_attacker else ~np.isin(owners, ctx.attackers)

    unchanged = all(sorted(p.key for p in posted[a]) == sorted(p.key for p in clean[a])
                    for a in ctx.attackers)  # attack=none: no need to train twice
    need_clean = ctx.cfg.eval.clean_baseline or unchanged
    clean_pred = classify(clean, test) if need_clean else None
    result = ProtectionResult([], [], post.budgets)
    if per_attacker:
        for a in ctx.attackers:
            pred = clean_pred if unchanged else classify({**clean, a: posted[a]}, test)
            result.outcomes.append(outcome(pred, a, others_of(a), posted))
    else:
        pred = clean_pred if unchanged else classify({**clean, **posted}, test)
        result.outcomes = [outcome(pred, a, others_of(a), posted) for a in ctx.attackers]
    if clean_pred is not None:
        result.clean_outcomes = [outcome(clean_pred, a, others_of(a), clean) for a in ctx.attackers]
    return result


class Classifier(Defense):
    """A classifier over the evaluation users in place of the 1-NN, scored beside it."""

    name = "classifier"

    def __init__(self, public_fraction: float, per_attacker: bool, robust_public: bool,
                 train_attacks):
        self.public_fraction, self.per_attacker = public_fraction, bool(per_attacker)
        self.robust_public, self.train_attacks = bool(robust_public), train_attacks

    @abc.abstractmethod
    def classify(self, ctx: DefenseContext) -> tuple[Classify, dict, str, dict]:
        """(classify, extra classes, fingerprint of the features' weights, extra labels)."""

    def run(self, ctx: DefenseContext) -> list[Defended]:
        if self.robust_public and not ctx.public.identities:
            raise ValueError(f"defense={self.name} with robust_public needs public users: "
                             "set defense.public_fraction > 0")
        classify, extra, weights, labels = self.classify(ctx)
        result = measure(ctx, classify, self.per_attacker, extra)
        base = ctx.extractor
        return [Defended(ctx.protection(base), "none", base.name, base.fingerprint),
                Defended(result, self.name, base.name, weights,  # the features' weights: a row each
                         {"classifier": self.name, "robust_public": self.robust_public, **labels,
                          "per_attacker": self.per_attacker})]


class LinearProbe(Classifier):
    """`defense=linear`: logistic regression on the trainer's frozen, cached embeddings."""

    name = "linear"

    def __init__(self, *, weight_decay: float, max_iter: int, **common):
        super().__init__(**common)
        self.settings = {"weight_decay": weight_decay, "max_iter": max_iter}

    def classify(self, ctx):
        if not self.robust_public:
            return linear_classifier(ctx, self.settings), {}, ctx.extractor.fingerprint, {}
        # Paper App. C.1: with robust training the linear probe sits on the robust extractor
        # (defense=robust's fine-tune on the public pictures); frozen base features with the
        # public pictures as extra classes cannot learn to see through a perturbation.
        features = ctx.build.defense("robust", train_attacks=self.train_attacks) \
            .robust_extractor(ctx)
        return (linear_classifier(ctx, self.settings, features), {}, features.fingerprint,
                {"robust_extractor": features.name})


class EndToEnd(Classifier):
    """`defense=end_to_end`: the extractor fine-tuned with a linear head over the evaluation
    users (the public users' clean + perturbed pictures as extra classes with robust_public)."""

    name = "end_to_end"

    def __init__(self, *, steps: int, batch_size: int, lr_backbone: float, lr_head: float,
                 weight_decay: float, flip: bool, freeze_bn: bool, checkpoint_every: int,
                 **common):
        super().__init__(**common)
        self.settings = {"steps": steps, "batch_size": batch_size, "lr_backbone": lr_backbone,
                         "lr_head": lr_head, "weight_decay": weight_decay, "flip": flip,
                         "freeze_bn": freeze_bn, "checkpoint_every": checkpoint_every}

    def classify(self, ctx):
        extra = public_groups(ctx, train_attacks(ctx, self.train_attacks)) \
            if self.robust_public else {}
        return end_to_end_classifier(ctx, self.settings), extra, ctx.extractor.fingerprint, {}
