"""`defense=combined` (paper Sec. 3.5, Fig. 6; App. D): an accurate and a robust model in one
facial recognition system.

- `top2`: both models run in parallel; a test picture is recognised when either model's 1-NN
  top-1 is the right user (the paper's top-2 accuracy of the two models).
- `threshold` (confidence thresholding): the accurate model answers unless its nearest gallery
  picture is farther than a threshold, set on the public users' clean pictures so that fewer
  than `max_rerouted` (2%) of them go to the robust model.
- `detector_gated` (App. D): as `threshold`, and a confident match whose nearest gallery picture
  a perturbation detector flags also goes to the robust model (against colluding users'
  targeted attacks). The rerouting budget is shared: the detector's cut-off is calibrated on
  the clean pictures of public users it never trained on so that at most `detector_share` of
  `max_rerouted` of them are flagged, and the distance threshold gets the rest.

Each attacker is evaluated alone, as by `measure_protection`: every model searches the clean
gallery once, and each attacker's swap is answered from the stored neighbours
(`NearestNeighbourEvaluator.neighbours_with_swap`, with the distance and row the systems need).
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
from scipy.stats import binom

from facecure.attacks.base import NoAttack
from facecure.data.dataset import Picture
from facecure.defenses.base import Defense
from facecure.defenses.context import Defended, DefenseContext
from facecure.defenses.detector import choose_users, perturbed_probability, train_detector
from facecure.defenses.detector_model import training_settings
from facecure.evaluation.evaluator import AttackerOutcome, NearestNeighbourEvaluator, Neighbours
from facecure.evaluation.protection import Posted, ProtectionResult
from facecure.extractors.base import Extractor
from facecure.utils.io import fingerprint

log = logging.getLogger(__name__)
SYSTEMS = ("top2", "threshold", "detector_gated")


class ModelView:
    """One model's 1-NN over the evaluation users, with the attackers' posted pictures."""

    def __init__(self, ctx: DefenseContext, extractor: Extractor, posted: Posted):
        train = [p for i in ctx.split.identities for p in ctx.split.train[i]]
        test = [p for i in ctx.split.identities for p in ctx.split.test[i]]
        self.gallery = ctx.embeddings.embed(extractor, train, ctx.progress)
        self.train_owners = np.array([p.identity for p in train])
        self.ev = NearestNeighbourEvaluator(
            self.gallery, self.train_owners, ctx.embeddings.embed(extractor, test, ctx.progress),
            [p.identity for p in test], ctx.index, attackers=ctx.attackers)
        pictures, self.owners = posted.flat()
        self.posted = ctx.embeddings.embed(extractor, pictures, ctx.progress)

    def neighbours(self, attacker: str, attacked: bool) -> Neighbours:
        """With `attacker`'s gallery rows swapped for what they post (or their clean rows)."""
        rows = (self.posted[self.owners == attacker] if attacked
                else self.gallery[self.train_owners == attacker])
        return self.ev.neighbours_with_swap(attacker, rows)


def calibrate_threshold(distances: np.ndarray, max_rerouted: float) -> float:
    """The smallest observed distance d with share(distances > d) < max_rerouted (the
    (1 - max_rerouted) quantile, rounded up to an observed value)."""
    if not 0 < max_rerouted < 1:
        raise ValueError(f"defense.max_rerouted must be in (0, 1), not {max_rerouted}")
    return float(np.quantile(distances, 1 - max_rerouted, method="higher"))


def public_nn_distances(ctx: DefenseContext, extractor: Extractor) -> np.ndarray:
    """Squared L2 distance of each public test picture to its nearest public train picture."""
    users = ctx.public.identities
    if not users:
        raise ValueError("defense=combined calibrates its threshold on public users: "
                         "set defense.public_fraction > 0")
    train = [p for u in users for p in ctx.public.train[u]]
    test = [p for u in users for p in ctx.public.test[u]]
    dist, _ = ctx.index.search(ctx.embeddings.embed(extractor, train, ctx.progress),
                               ctx.embeddings.embed(extractor, test, ctx.progress), 1)
    return dist[:, 0]


def allowed_flags(n: int, budget: float, confidence: float) -> int:
    """The most of `n` held-out clean pictures a cut-off may flag so that a detector whose
    true flag rate reached `budget` would flag more with probability >= `confidence` (a
    one-sided binomial test): what is seen on a few hundred held-out pictures must hold on
    other users' pictures too. 0 where even that cannot be told apart."""
    if budget >= 1:
        return n
    k = int(binom.ppf(1 - confidence, n, budget))  # the least k with P(X <= k) >= 1 - confidence
    if binom.cdf(k, n, budget) > 1 - confidence:
        k -= 1  # the largest k with P(X <= k) <= 1 - confidence
    return max(k, 0)


def calibrate_cutoff(p_clean: np.ndarray, budget: float, floor: float,
                     confidence: float = 0.95) -> float:
    """Detector cut-off (flag when p > cut-off): the highest cut-off that flags at most
    `allowed_flags` of the held-out clean pictures, never below `floor` (the detector's own
    threshold)."""
    if len(p_clean) == 0:
        raise ValueError("the detector's cut-off is calibrated on held-out public users' clean "
                         "pictures, and there are none: raise defense.detector.n_test_users")
    ranked = np.sort(np.asarray(p_clean, dtype=float))[::-1]
    k = allowed_flags(len(ranked), budget, confidence)
    cutoff = ranked[k] if k < len(ranked) else -np.inf  # exactly the k highest lie above it
    return max(float(cutoff), float(floor))


def reroute(system: str, acc: Neighbours, threshold: float, flags: np.ndarray | None) -> np.ndarray:
    """Which queries the system hands to the robust model (top2: all of them)."""
    if system == "top2":
        return np.ones(len(acc.label), bool)
    out = acc.dist > threshold
    return out | flags[acc.row] if system == "detector_gated" else out


def recognised(system: str, truth: np.ndarray, acc: Neighbours, rob: Neighbours,
               threshold: float, flags: np.ndarray | None) -> np.ndarray:
    if system == "top2":
        return (acc.label == truth) | (rob.label == truth)
    return np.where(reroute(system, acc, threshold, flags), rob.label, acc.label) == truth


def outcome(attacker: str, code: int, truth: np.ndarray, correct: np.ndarray, n_rows: int,
            n_perturbed: int) -> AttackerOutcome:
    mine = truth == code
    return AttackerOutcome(attacker, float(1 - correct[mine].mean()),
                           float(correct[~mine].mean()), int(mine.sum()), n_rows, n_perturbed)


ROBUST_RECIPES = ("robust", "robust_invariant")  # conf/defense configs of the robust fine-tune


class Flags(NamedTuple):
    gallery: np.ndarray   # per clean gallery (evaluation train) picture: flagged as perturbed
    posted: np.ndarray    # per posted picture (Posted.flat order)
    cutoff: float         # flag when the highest detector probability exceeds it
    clean_share: float    # share of the held-out public clean pictures flagged (calibration)


def detector_flags(ctx: DefenseContext, posted: Posted, budget: float, confidence: float,
                   detection) -> Flags | None:
    """Whether the detector (`detection`: a PerturbationDetection, one detector per train
    attack, a picture flagged if any flags it) calls each clean gallery picture and each posted
    picture perturbed, at a cut-off that flags at most `allowed_flags` (for `budget` and
    `confidence`) of the clean pictures of the public users held out from its training; None,
    with a warning, when the trainer's attacks perturb nothing (attack=none)."""
    settings = training_settings(detection.settings)
    attacks = [a for _, a in ctx.named_attacks(settings["train_attacks"])]
    if all(isinstance(a, NoAttack) for a in attacks):
        log.warning("combined: no detector_gated system: the detector's train attacks "
                    "perturb nothing (attack=none)")
        return None
    detectors = [train_detector(ctx, attack, settings) for attack in attacks]

    def probability(pictures: list[Picture]) -> np.ndarray:
        return np.max([perturbed_probability(d, pictures) for d in detectors], axis=0)

    _, held_out = choose_users(ctx.public.identities, settings["n_train_users"],
                               settings["n_test_users"], settings["seed"])
    p_clean = probability([p for u in held_out for p in ctx.public.train[u] + ctx.public.test[u]])
    cutoff = calibrate_cutoff(p_clean, budget, settings["threshold"], confidence)
    train = [p for i in ctx.split.identities for p in ctx.split.train[i]]
    return Flags(probability(train) > cutoff, probability(posted.flat()[0]) > cutoff, cutoff,
                 float((p_clean > cutoff).mean()))


# --- the defense --------------------------------------------------------------------------------

class CombinedSystem(Defense):
    """An accurate and a robust model in one system (settings: conf/defense/combined.yaml)."""

    name = "combined"

    def __init__(self, *, public_fraction: float, accurate, robust, robust_settings,
                 systems: list[str], max_rerouted: float, detector_share: float,
                 detector_confidence: float, detector: dict | None):
        unknown = sorted(set(systems) - set(SYSTEMS))
        if unknown:
            raise ValueError(f"unknown defense.systems {unknown}; choose among {', '.join(SYSTEMS)}")
        if not 0 < detector_share < 1:
            raise ValueError(f"defense.detector_share must be in (0, 1), not {detector_share}")
        self.public_fraction, self.accurate, self.robust = public_fraction, accurate, robust
        self.robust_settings, self.systems = robust_settings or {}, list(systems or SYSTEMS)
        self.max_rerouted, self.detector_share = max_rerouted, detector_share
        self.detector_confidence, self.detector = detector_confidence, detector or {}

    def robust_member(self, ctx: DefenseContext) -> tuple[Extractor, str]:
        """(robust model, the defense label of its own records): `robust` names the adaptive
        trainer's fine-tune (conf/defense/<robust>.yaml under `robust_settings`), else an
        extractor (a name or {name: ..., overrides})."""
        if self.robust not in ROBUST_RECIPES:
            return ctx.build.extractor(self.robust), "none"
        fine_tune = ctx.build.defense(self.robust, **self.robust_settings)
        return fine_tune.robust_extractor(ctx), "robust"

    def run(self, ctx: DefenseContext) -> list[Defended]:
        """The two models alone (defense "none" and the robust model's own label), then one
        Defended per system (defense "combined") with its rerouted share of clean pictures."""
        systems = list(self.systems)
        # The detector's settings first: a typo in them fails now, not after the fine-tune.
        detection = ctx.build.defense("detector", **self.detector) \
            if "detector_gated" in systems else None
        accurate = ctx.build.extractor(self.accurate)
        robust, robust_defense = self.robust_member(ctx)
        max_rerouted, detector_share = self.max_rerouted, self.detector_share
        detector_budget = max_rerouted * detector_share
        calibration = public_nn_distances(ctx, accurate)
        threshold = calibrate_threshold(calibration, max_rerouted)
        thresholds = {"top2": threshold, "threshold": threshold}  # top2 reroutes all, whatever it is
        posted = ctx.posted()
        acc_view, rob_view = ModelView(ctx, accurate, posted), ModelView(ctx, robust, posted)
        flags = detector_flags(ctx, posted, detector_budget, self.detector_confidence,
                               detection) \
            if "detector_gated" in systems else None
        if flags is None and "detector_gated" in systems:
            systems.remove("detector_gated")
        if flags is not None:  # the distance threshold gets what the detector leaves of the budget
            thresholds["detector_gated"] = calibrate_threshold(calibration,
                                                               max_rerouted - detector_budget)

        truth = acc_view.ev.query_labels
        results = {s: ProtectionResult([], [], posted.budgets)
                   for s in ["accurate", "robust", *systems]}
        for a in ctx.attackers:
            code = acc_view.ev.names.index(a)
            for attacked in (True, False):  # the attack, then the clean baseline
                acc, rob = acc_view.neighbours(a, attacked), rob_view.neighbours(a, attacked)
                rows = acc_view.owners == a if attacked else acc_view.train_owners == a
                swapped = None if flags is None else np.concatenate(
                    [flags.gallery, (flags.posted if attacked else flags.gallery)[rows]])
                correct = {"accurate": acc.label == truth, "robust": rob.label == truth}
                correct.update({s: recognised(s, truth, acc, rob, thresholds[s], swapped)
                                for s in systems})
                n_perturbed = posted.n_perturbed(a) if attacked else 0
                for name, c in correct.items():
                    o = outcome(a, code, truth, c, int(rows.sum()), n_perturbed)
                    (results[name].outcomes if attacked else results[name].clean_outcomes).append(o)

        ev = acc_view.ev  # the clean gallery: every evaluation test picture against clean train ones
        clean = ev.first
        label = f"{accurate.name}+{robust.name}"
        out = [Defended(results["accurate"], "none", accurate.name, accurate.fingerprint),
               Defended(results["robust"], robust_defense, robust.name, robust.fingerprint,
                        {"robust_extractor": robust.name} if robust_defense != "none" else {})]
        for s in systems:
            # rerouted_share: clean test pictures the robust model also runs on (top2: all of them)
            threshold = thresholds[s]
            share = float(reroute(s, clean, threshold, None if flags is None else flags.gallery).mean())
            labels = {"system": s, "robust_extractor": robust.name, "max_rerouted": max_rerouted}
            measured = {"rerouted_share": share, "threshold": threshold,
                        "calibration_rerouted_share": float((calibration > threshold).mean())}
            if s == "detector_gated":  # calibration: distances above + held-out clean flagged
                measured.update(detector_cutoff=flags.cutoff, detector_clean_flagged=flags.clean_share)
                measured["calibration_rerouted_share"] += flags.clean_share  # at most (union bound)
            fp = fingerprint({"accurate": accurate.fingerprint, "robust": robust.fingerprint,
                              "system": s, "threshold": threshold,
                              "cutoff": flags.cutoff if s == "detector_gated" else None})
            out.append(Defended(results[s], "combined", label, f"combined-{fp}", labels, measured))
            log.info("combined %s: clean accuracy %.3f (accurate alone %.3f), rerouted %.1f%%", s,
                     np.mean([o.clean_accuracy for o in results[s].clean_outcomes]),
                     np.mean([o.clean_accuracy for o in results["accurate"].clean_outcomes]),
                     100 * share)
        return out
