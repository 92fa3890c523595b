"""The audit's report: one page a person can read (report.md, verdict.png) and verdict.json for
scripts. Numbers only: no photo, crop or embedding is written into it."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from facecure.evaluation.open_set import fpir_key  # noqa: E402
from facecure.utils.io import atomic_write_text  # noqa: E402

MAIN = "protected, as posted"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def verdict_line(model: dict, cond: dict) -> str:
    """"recognised in 5 of 6 probe photos by faceres (2019-06)"."""
    found = sum(p["rank"] == 1 for p in cond["probes"])
    who = f"{model['name']} ({model['date']}" + (
        ", fine-tuned on public cloaks by the adaptive trainer)" if model.get("adaptive") else ")")
    if not cond["n_posted"]:
        return f"no face left to search in the {cond['condition']} photos for {who}"
    if not found:
        return f"not recognised in any of the {cond['n_probes']} probe photos by {who}"
    return f"recognised in {found} of {cond['n_probes']} probe photos by {who}"


def verdict_json(result: dict) -> dict:
    """Per model: name, date, and for the photos as posted (and each other condition) rank-1,
    rank-k and TPIR at each FPIR."""
    models = []
    for m in result["models"]:
        conds = {c["condition"]: {"rank1": c["rank1"], "rank_k": c["rank_k"], "tpir": c["tpir"],
                                  "n_probes": c["n_probes"], "n_posted": c["n_posted"]}
                 for c in m["conditions"]}
        main = conds.get(MAIN) or next(iter(conds.values()))
        models.append({"name": m["name"], "date": m["date"], "adaptive": m.get("adaptive"),
                       **main, "conditions": conds})
    return {"models": models, "detectors": result.get("detectors"), "fpirs": result["fpirs"], "notes": result["notes"],
            "n_distractor_identities": result["n_distractor_identities"],
            "wall_s": result["wall_s"], "uploaded": False}


def figure(result: dict, path: Path) -> Path:
    """Rank-1 (bars) and TPIR at FPIR 1e-3 (dots) per model and condition."""
    models = sorted(result["models"], key=lambda m: m["date"])
    conds = list(dict.fromkeys(c["condition"] for m in models for c in m["conditions"]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(models), 3.6))
    width = 0.8 / max(1, len(conds))
    key = fpir_key(result["fpirs"][-1])
    for j, cond in enumerate(conds):
        xs, r1, tp = [], [], []
        for i, m in enumerate(models):
            c = next((c for c in m["conditions"] if c["condition"] == cond), None)
            if c is not None:
                xs.append(i + (j - (len(conds) - 1) / 2) * width)
                r1.append(100 * c["rank1"])
                tp.append(100 * c["tpir"].get(key, 0.0))
        bars = ax.bar(xs, r1, width, label=cond)
        ax.plot(xs, tp, "o", color="black", ms=3, zorder=3)
        if j == 0:
            bars.set_label(cond)
    ax.plot([], [], "o", color="black", ms=3, label=f"found at FPIR {result['fpirs'][-1]:g}")
    ax.set_xticks(range(len(models)), [f"{m['name']}\n{m['date']}" for m in models], fontsize=8)
    ax.set_ylabel("probe photos recognised %")
    ax.set_ylim(0, 105)
    ax.set_title("Is the person found? (lower: better protected)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(result: dict, out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "verdict.json", json.dumps(verdict_json(result), indent=1))
    atomic_write_text(out / "audit.json", json.dumps(result, indent=1, default=str))
    figure(result, out / "verdict.png")
    fp = [f"{f:g}" for f in result["fpirs"]]
    models = sorted(result["models"], key=lambda m: m["date"])
    md = ["# FaceCure audit", "",
          "**Nothing left this machine.** The photos were read from their folders and every model "
          "ran here; this folder holds numbers and a chart, no photo or face crop.", "",
          f"`{command}`", "",
          f"Posted (protected) photos: `{result['posted']}`; probe photos: `{result['probe']}`"
          + (f"; originals: `{result['clean']}`" if result["clean"] else "") + f". Gallery: the "
          f"posted photos among {result['n_distractor_identities']} distractor identities "
          f"(`{result['distractors']}`). Wall time {result['wall_s']:.0f} s on "
          f"{result['threads']} CPU threads.", "", "## Verdict", ""]
    for m in models:
        main = next((c for c in m["conditions"] if c["condition"] == MAIN), m["conditions"][0])
        md.append(f"- {verdict_line(m, main)}")
        for c in m["conditions"]:
            if c is not main:
                md.append(f"  - {c['condition']}: {verdict_line(m, c).split(' by ')[0]}")
    md += ["", "![verdict](verdict.png)", "", "## The numbers", "",
           "| model | date | photos | rank-1 | rank-5 | rank-10 | "
           + " | ".join(f"TPIR @ FPIR {f}" for f in fp) + " | posted photos without a face |",
           "|---|---|---|---|---|---|" + "---|" * len(fp) + "---|"]
    for m in models:
        for c in m["conditions"]:
            md.append(f"| {m['name']} | {m['date']} | {c['condition']} | {_pct(c['rank1'])} | "
                      f"{_pct(c['rank_k'].get('5'))} | {_pct(c['rank_k'].get('10'))} | "
                      + " | ".join(_pct(c["tpir"].get(fpir_key(f))) for f in result["fpirs"])
                      + f" | {len(c['without_face'])} of {c['photos']} |")
    md += ["", "## What the numbers mean", "",
           "- **rank-1**: the share of probe photos whose closest identity in the gallery is you "
           "(the paper's measure; a protection works when this is low). **rank-k**: you are "
           "among the k closest identities, as a person reviewing a search engine's top results "
           "would see you.",
           "- **TPIR at FPIR**: a face-search engine answers only when the match is close enough. "
           "Its threshold is set so that a search for a stranger (a distractor photo, its own "
           "identity left out) returns someone in 1 search of 100 (FPIR 1e-2) or 1 of 1,000; "
           "TPIR is the share of your probe photos found at that threshold.",
           "- **conditions**: the posted photos as given, after what platforms do (JPEG "
           "recompression at quality 85 and 70, half size; the face detected again), and, with "
           "`--clean`, the unprotected originals: the protection's effect is the difference.",
           "- With a few probe photos each is a large step (1 of 5 = 20 points)."]
    thr = next((c["thresholds"] for m in models for c in m["conditions"] if c["thresholds"]), [])
    if any(not t["resolved"] for t in thr):
        md.append(f"- Too few distractor photos ({thr[0]['n_nonmated']}) to measure the lowest "
                  "FPIR: its threshold admits no stranger at all.")
    if result.get("detectors"):
        md += ["", "## Would the trainer flag the posted photos as cloaked?", "",
               "The adaptive trainer's perturbation detectors (its detection experiment: trained "
               "on its public users' photos and their cloaks, AUC on held-out users' cloaks):", "",
               "| detector trained on | its AUC | posted photos flagged | originals flagged |",
               "|---|---|---|---|"]
        for d in result["detectors"]:
            def share(s):
                return "-" if not s or s["flagged"] is None else f"{100 * s['flagged']:.0f}% of {s['n']}"
            md.append(f"| {d['train_attack']} | {d['auc_on_own_attack']:.3f} | "
                      f"{share(d.get('posted'))} | {share(d.get('clean'))} |")
    if result.get("budgets"):
        md += ["", "## The protection's budget (posted photo against its original)", "",
               "| photo | DSSIM | L∞ (/255) | LPIPS-Alex |", "|---|---|---|---|"]
        for b in result["budgets"]:
            if "error" in b:
                md.append(f"| {b['photo']} | {b['error']} | | |")
            else:
                lp = "-" if b["lpips_alex"] is None else f"{b['lpips_alex']:.3f}"
                md.append(f"| {b['photo']} | {b['dssim']:.4f} | {255 * b['linf']:.1f} | {lp} |")
    notes = list(result["notes"])
    for m in models:
        if m["probes_without_face"]:
            notes.append(f"{m['name']}: {len(m['probes_without_face'])} probe photo(s) without a "
                         "usable face: " + "; ".join(f"{x['photo']} ({x['reason']})"
                                                     for x in m["probes_without_face"]))
    notes += [f"unreadable: {Path(s['path']).name}: {s['reason']}" for s in result["unreadable"]]
    if notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    return out / "report.md"
