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

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from facecure.data.dataset import Picture
from facecure.defenses.context import Defended, DefenseContext
from facecure.defenses.robust import (
    FINE_TUNE_DEFAULTS,
    RECIPE_VERSION,
    FineTuner,
    PictureSet,
    fine_tune,
    public_groups,
    recipe_of,
    robust_extractor,
    train_attacks,
    trainable_copy,
    trainer_kwargs_of,
)
from facecure.evaluation.evaluator import AttackerOutcome
from facecure.evaluation.protection import ProtectionResult
from facecure.utils.io import fingerprint

LINEAR_DEFAULTS = {"weight_decay": 1e-4, "max_iter": 300}
COMMON_DEFAULTS = {"robust_public": False, "train_attacks": None}
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
        data = PictureSet(groups, base.input_size)
        fp = fingerprint({"base": base.fingerprint, "recipe": recipe, "seed": ctx.seed,
                          "train": sorted((c, p.key) for c in groups for p in groups[c]),
                          "version": RECIPE_VERSION})
        module = FineTuner(trainable_copy(base, "end_to_end"), len(data.classes),
                           settings["lr_backbone"], settings["lr_head"], settings["weight_decay"],
                           settings["flip"], settings["freeze_bn"])
        path = ctx.cache_dir / f"{base.name}+end_to_end-{fp}.pt"
        fine_tune(module, data, settings, ctx.seed, path, module, trainer_kwargs_of(ctx))
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


def _run(ctx: DefenseContext, kind: str, defaults: dict) -> list[Defended]:
    spec = OmegaConf.to_container(ctx.cfg.defense, resolve=True)
    settings = {**COMMON_DEFAULTS, **defaults, **{k: spec[k] for k in spec
                                                  if k in defaults or k in COMMON_DEFAULTS}}
    per_attacker = bool(spec.get("per_attacker", kind == "linear"))
    extra, labels, weights = {}, {}, ctx.extractor.fingerprint
    if settings["robust_public"]:
        if not ctx.public.identities:
            raise ValueError(f"defense={kind} with robust_public needs public users: "
                             "set defense.public_fraction > 0")
    if kind == "linear":
        # Paper App. C.1: with robust training the linear probe sits on the robust extractor
        # (defense=robust's fine-tune on the public pictures); frozen base features with the
        # public pictures as extra classes cannot learn to see through a perturbation.
        features = None
        if settings["robust_public"]:
            features = robust_extractor(ctx, {"train_attacks": settings["train_attacks"]})
            labels, weights = {"robust_extractor": features.name}, features.fingerprint
        classify = linear_classifier(ctx, settings, features)
    else:  # end to end: the public users' clean and perturbed pictures as extra classes
        if settings["robust_public"]:
            extra = public_groups(ctx, train_attacks(ctx, settings["train_attacks"]))
        classify = end_to_end_classifier(ctx, settings)
    result = measure(ctx, classify, per_attacker, extra)
    base = ctx.extractor
    return [Defended(ctx.protection(base), "none", base.name, base.fingerprint),
            Defended(result, kind, base.name, weights,  # the features' weights: a report row each
                     {"classifier": kind, "robust_public": bool(settings["robust_public"]), **labels,
                      "per_attacker": per_attacker})]


def run_linear(ctx: DefenseContext) -> list[Defended]:
    return _run(ctx, "linear", LINEAR_DEFAULTS)


def run_end_to_end(ctx: DefenseContext) -> list[Defended]:
    return _run(ctx, "end_to_end", FINE_TUNE_DEFAULTS)
