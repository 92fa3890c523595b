"""PNG figures shaped like the paper's: bars with the spread over attacker users, extractors
ordered by date. Each function draws only what the data hold and returns the file it wrote."""
from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a compute node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facecure.report.groups import clean_baselines, is_plain  # noqa: E402

SYNTHETIC_NOTE = "synthetic faces (embedded default), not FaceScrub"


def _finish(fig, path: Path, synthetic: bool) -> Path:
    if synthetic:
        fig.text(0.99, 0.01, SYNTHETIC_NOTE, ha="right", va="bottom", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tick_label(name: str, width: int = 18) -> str:
    """A model's name wrapped onto short lines (at spaces and before each '+'), so that
    neighbouring bars' labels do not run into each other."""
    lines = textwrap.wrap(name.replace("+", " +"), width)
    return "\n".join(line.replace(" +", "+") for line in lines)


def _spread(rows: list[dict]) -> list[list[float]]:
    """std error bars clipped to the [0, 1] range a rate lives in."""
    return [[min(g["protection_std"], g["protection_mean"]) for g in rows],
            [min(g["protection_std"], 1 - g["protection_mean"]) for g in rows]]


def protection_by_extractor(groups: list[dict], path: Path, synthetic: bool) -> Path | None:
    """Figs. 2, 4, 5 (10, 11): one panel per attack, a bar per trainer's model ordered by date,
    the clean baseline (same attackers posting clean pictures) as a grey bar beside it."""
    attacked = [g for g in groups if g["attack"] != "none" and g["unprotected_mean"] == 0
                and is_plain(g) and not g.get("distractors")]  # those: protection_vs_distractors
    if not attacked:
        return None
    clean = clean_baselines(groups)
    panels = defaultdict(list)
    for g in attacked:
        panels[(g["experiment"], g["attack_name"])].append(g)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 1.3 * max(map(len, panels.values())) + 2),
                                                      3.2 * len(panels)), squeeze=False)
    for ax, ((experiment, attack), rows) in zip(axes[:, 0], sorted(panels.items())):
        rows = sorted(rows, key=lambda g: (g["date"], g["system_name"]))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [g["protection_mean"] for g in rows], 0.4,
               yerr=_spread(rows), capsize=3, color="tab:blue",
               label="protection rate (attacked)")
        base = [clean.get((g["experiment"], g["system_name"], g["dataset"])) for g in rows]
        ax.bar(x + 0.2, [b["protection_mean"] if b else np.nan for b in base], 0.4,
               color="lightgrey", label="clean pictures (error rate)")
        ax.set_xticks(x, [f"{tick_label(g['system_name'])}\n{g['date']}" for g in rows], fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("protection rate")
        ax.set_title(f"{experiment}: {attack}", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper right", ncol=2)
    fig.subplots_adjust(top=0.9)
    return _finish(fig, path, synthetic)


def unprotected_curve(groups: list[dict], path: Path, synthetic: bool) -> Path | None:
    """Fig. 7: protection rate against the number of pictures the user left unperturbed."""
    lines = defaultdict(list)
    for g in groups:
        if g["attack"] != "none" and g["attack_unprotected"] is not None:
            lines[(g["attack_name"], g["system_name"])].append(g)
    lines = {k: v for k, v in lines.items() if len({g["unprotected_mean"] for g in v}) > 1}
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    # Lines often coincide (once one clean picture is posted, the 1-NN finds it whatever the
    # attack): each its own marker, line style and a small sideways shift keep all visible.
    for k, ((attack, system), rows) in enumerate(sorted(lines.items())):
        rows = sorted(rows, key=lambda g: g["unprotected_mean"])
        ax.errorbar([g["unprotected_mean"] + 0.04 * k for g in rows],
                    [g["protection_mean"] for g in rows], yerr=_spread(rows),
                    marker="osD^v"[k % 5], linestyle=("-", "--", ":", "-.")[k % 4], capsize=3,
                    label=f"{attack} vs {system}")
    ax.set_xlabel("unprotected training pictures per user")
    ax.set_ylabel("protection rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    return _finish(fig, path, synthetic)


def distractor_lines(groups: list[dict]) -> tuple[dict, dict]:
    """The curves of protection against gallery size: (attack, model and index) -> its rows,
    and (model, index, size) -> the lowest recall@1 of its approximate jobs. A model measured
    at one size has no curve; its approximate-search points (sizes too slow to search exactly)
    are kept, as their own line, beside its exact one."""
    lines = defaultdict(list)
    for g in groups:
        if is_plain(g):
            lines[(g["attack_name"], g["system_base"])].append(g)
    sizes = defaultdict(set)
    for (attack, _), rows in lines.items():
        sizes[attack, rows[0]["system_model"]] |= {g["distractors"] for g in rows}
    lines = {k: v for k, v in lines.items() if len(sizes[k[0], v[0]["system_model"]]) > 1}
    # A recall belongs to the model's index at one size, not to an attack's line.
    recall = defaultdict(list)
    for g in (g for v in lines.values() for g in v if g["index"] != "flat"):
        if g["index_recall_at_1"] is not None:
            recall[g["system_model"], g["index"], g["distractors"]].append(g["index_recall_at_1"])
    return lines, {k: min(v) for k, v in recall.items()}


def protection_vs_distractors(groups: list[dict], path: Path, synthetic: bool) -> Path | None:
    """Protection rate (closed set, and open set at FPIR 1e-2) against the distractor
    identities in the gallery, a line per attack and model; hollow markers where the
    distractors were drawn, the index's recall@1 written (once per size) where the search was
    approximate."""
    lines, recall = distractor_lines(groups)
    if not lines:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    noted = set()
    for k, ((attack, system), rows) in enumerate(sorted(lines.items())):
        rows = sorted(rows, key=lambda g: g["distractors"])
        x = [g["distractors"] for g in rows]
        style = dict(marker="osD^v"[k % 5], linestyle="--" if attack == "none" else "-")
        label = "clean pictures (error rate)" if attack == "none" else attack
        label += f" vs {system}"
        for ax, key in zip(axes, ("protection_mean", "open_protection_fpir1e-2")):
            y = [g[key] if g[key] is not None else np.nan for g in rows]
            line, = ax.plot(x, y, label=label, **style)
            for xi, yi, g in zip(x, y, rows):
                if g.get("distractors_drawn"):  # drawn, not pictures: hollow
                    ax.plot(xi, yi, style["marker"], mfc="white", color=line.get_color())
                note = (g["system_model"], g["index"], xi)
                if ax is axes[0] and note in recall and note not in noted:
                    noted.add(note)
                    ax.annotate(f"{g['index']} r@1 {recall[note]:.3f}", (xi, yi),
                                fontsize=6, xytext=(3, 3), textcoords="offset points")
    sizes = [g["distractors"] for v in lines.values() for g in v]
    for ax, title in zip(axes, ("closed set (1-NN)", "open set, FPIR 1e-2")):
        ax.set_xscale("symlog", linthresh=100)
        ax.set_xlim(-30, max(sizes) * 2)  # symlog's autoscale runs into negative sizes
        ax.set_xlabel("distractor identities in the gallery (hollow: drawn embeddings)")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("protection rate")
    axes[1].legend(fontsize=7, loc="lower right")
    # An exact search misses no neighbour: its recall@1 is 1 at every size, so no label.
    if any(g["index"] == "flat" for v in lines.values() for g in v):
        fig.suptitle("unmarked points: exact search (index=flat, recall@1 = 1)", fontsize=8)
    return _finish(fig, path, synthetic)


def wiseft_curve(groups: list[dict], path: Path, synthetic: bool) -> Path | None:
    """App. B.3: WiSE-FT's accuracy / robustness trade-off over alpha."""
    rows = [g for g in groups if g["alpha"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for attack in sorted({g["attack_name"] for g in rows}):
        pts = sorted((g for g in rows if g["attack_name"] == attack), key=lambda g: g["alpha"])
        clean = attack.startswith("none")
        ax.plot([g["alpha"] for g in pts], [g["protection_mean"] for g in pts], "--" if clean else "-",
                marker="o", label="error rate, clean pictures" if clean else f"protection rate: {attack}")
    pts = sorted((g for g in rows if g["attack"] == "none"), key=lambda g: g["alpha"])
    ax.plot([g["alpha"] for g in pts], [g["clean_accuracy"] for g in pts], "k-", marker="s",
            label="clean accuracy")
    ax.set_xlabel("alpha (0 = zero-shot, 1 = fine-tuned)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    return _finish(fig, path, synthetic)


def paired_bars(groups: list[dict], key: str, path: Path, synthetic: bool, title: str) -> Path | None:
    """Fig. 6 (key="system") and Fig. 9 (key="classifier"): clean accuracy and protection rate
    per system, one panel per attack, beside the single models the same runs measured."""
    experiments = {g["experiment"] for g in groups if g[key] is not None}
    rows = [g for g in groups if g["experiment"] in experiments and g["attack"] != "none"]
    if not experiments:
        return None
    attacks = sorted({g["attack_name"] for g in rows})
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.5 * len(attacks), 4), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        # the single models first, then the systems built from them
        pts = sorted((g for g in rows if g["attack_name"] == attack),
                     key=lambda g: (g[key] is not None, g["system_name"]))
        x = np.arange(len(pts))
        ax.bar(x - 0.2, [g["clean_accuracy"] for g in pts], 0.4, color="tab:green", label="clean accuracy")
        ax.bar(x + 0.2, [g["protection_mean"] for g in pts], 0.4, yerr=_spread(pts),
               capsize=3, color="tab:blue", label="protection rate")
        single = "1-NN: {}" if key == "classifier" else "{}"  # the runs' own single models
        names = [str(g[key]) + (" +\nrobust data" if g.get("robust_public") else "") if g[key]
                 else single.format(g["system_name"]) for g in pts]
        ax.set_xticks(x, names, fontsize=7, rotation=15)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{title}: {attack}", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return _finish(fig, path, synthetic)


def detector_transfer(detectors: list[dict], path: Path, synthetic: bool) -> Path | None:
    """Table 3 as a heatmap: the AUC of each detector (rows: the attack it was trained on) on
    each attack (columns), the figure's number in each cell; the last record of a cell wins."""
    trains = list(dict.fromkeys(d["train_attack"] for d in detectors))  # as the runs list them
    tests = list(dict.fromkeys(d["test_attack"] for d in detectors))
    if len(trains) < 2 and len(tests) < 2:
        return None
    auc = np.full((len(trains), len(tests)), np.nan)
    for d in detectors:
        auc[trains.index(d["train_attack"]), tests.index(d["test_attack"])] = d["auc"]
    fig, ax = plt.subplots(figsize=(1.0 * len(tests) + 3.5, 0.6 * len(trains) + 2.2))
    # AUC 0.5 is chance: the colour scale starts there, so a pale cell is a weak detector.
    image = ax.imshow(auc, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(auc):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                    color="black" if v > 0.8 else "white")
    # attack labels break after their "/" (fawkes_v10/\nlow) and at spaces
    ax.set_xticks(range(len(tests)), [tick_label(t.replace("/", "/ "), 10).replace("/ ", "/")
                                      for t in tests], fontsize=7)
    ax.set_yticks(range(len(trains)), trains, fontsize=7)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title("detector transfer (Table 3): AUC on held-out users", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _finish(fig, path, synthetic)
