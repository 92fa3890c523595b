"""report.md + results.csv + figures/ for a run or multirun folder."""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from facecure.report import figures
from facecure.report.checks import checks_section, run_checks, tested_on_own_attack
from facecure.report.collect import Collected, collect
from facecure.report.compare import compare
from facecure.report.gaps import gap_table
from facecure.report.groups import OPEN_SET_KEYS, clean_baselines, group_attackers, is_plain
from facecure.sweep import failure_line, sweep_status
from facecure.utils.io import atomic_write_text
from facecure.worlds import record_world


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v, scale: float, fmt: str) -> str:
    return "-" if v is None else format(scale * v, fmt)


def _unprotected(g: dict) -> str:
    """Pictures each attacker left clean: the setting, else the measured mean (attacked rows)."""
    if g["attack"] == "none":
        return "all"
    return f"{g['unprotected_mean']:g}"


def experiment_info(records: list[dict]) -> dict:
    """experiment -> (paper_order, title), as the experiment's config told its records
    (`experiment_info` in experiments/<name>.yaml); experiments without one come last."""
    info = {}
    for r in records:
        if r.get("experiment_title") or r.get("paper_order") is not None:
            info[r.get("experiment")] = (r.get("paper_order"), r.get("experiment_title"))
    return info


def experiment_order(names, info: dict) -> list:
    """The paper's order where the records carry one, then the others by name."""
    def place(name):
        order = (info.get(name) or (None, None))[0]
        return (order is None, order or 0, str(name))
    return sorted(names, key=place)


def _open_set(g: dict) -> str:
    """Open-set protection at FPIR 1e-2 / 1e-3 (a search that passes no threshold protects)."""
    values = [g.get(f"open_protection_{k}") for k in OPEN_SET_KEYS]
    return "-" if all(v is None for v in values) else " / ".join(_pct(v) for v in values)


def protection_table(groups: list[dict]) -> str:
    lines = ["| attack | trainer's model | date | protection % (mean ± std) | open-set % at FPIR "
             "1e-2 / 1e-3 | clean acc. % | attackers | seeds | unprotected | max DSSIM | max L∞ (/255) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        lines.append(
            f"| {g['attack_name']} | {g['system_name']} | {g['date']} | "
            f"{_pct(g['protection_mean'])} ± {_pct(g['protection_std'])} | {_open_set(g)} | "
            f"{_pct(g['clean_accuracy'])} | "
            f"{g['n_attackers']} | {','.join(map(str, g['seeds']))} | {_unprotected(g)} | "
            f"{_num(g['dssim_max'], 1, '.4f')} | {_num(g['linf_max'], 255, '.1f')} |")
    return "\n".join(lines)


def detector_tables(detectors: list[dict]) -> str:
    """Table 2 (train attack = test attack) and Table 3 (AUC, train rows x test columns)."""
    if not detectors:
        return ""
    same = [d for d in detectors if tested_on_own_attack(d)]
    out = ["### Detection (Table 2: trained and tested on the same attack, held-out users)", "",
           "| attack | accuracy % | precision % | recall % | AUC | unchanged twins % | "
           "AUC without them | train / test users | init |",
           "|---|---|---|---|---|---|---|---|---|"]
    for d in same:
        name = d["test_attack"] if d["train_attack"] == d["test_attack"] else \
            f"{d['test_attack']} (trained on {d['train_attack']})"
        out.append(f"| {name} | {_pct(d['accuracy'])} | {_pct(d['precision'])} | "
                   f"{_pct(d['recall'])} | {d['auc']:.3f} | {_num(d.get('unchanged_share'), 100, '.1f')} | "
                   f"{_num(d.get('auc_changed'), 1, '.3f')} | {d.get('n_train_users')} / "
                   f"{d.get('n_test_users')} | {d.get('init', '-')} |")
    if any(d.get("unchanged_share") for d in same):
        out += ["", "Unchanged twins: perturbed pictures the attack left within "
                "`defense.unchanged_tolerance`/255 of the clean picture in every pixel (Fawkes "
                "returns its start when no step kept to its budget); no detector can flag them."]
    trains = list(dict.fromkeys(d["train_attack"] for d in detectors))  # as the runs list them
    tests = list(dict.fromkeys(d["test_attack"] for d in detectors))
    if len(trains) > 1 or len(tests) > 1:
        auc = {(d["train_attack"], d["test_attack"]): d["auc"] for d in detectors}
        out += ["", "### Detector transfer (Table 3: AUC, trained on the row's attack, tested on the column's)",
                "", "| train \\ test | " + " | ".join(tests) + " |", "|---" * (len(tests) + 1) + "|"]
        for t in trains:
            out.append(f"| {t} | " + " | ".join(
                f"{auc[(t, s)]:.3f}" if (t, s) in auc else "-" for s in tests) + " |")
    return "\n".join(out)


def validation_table(validations: list[dict]) -> str:
    """Robust recipes scored on public users held out of their fine-tune (the trainer's own
    check, `defense.validation_users`), one row per (train attack, model)."""
    if not validations:
        return ""
    out = ["### Validation on held-out public users (the trainer's check of its recipe)", "",
           "| train attack | model | held-out users | protection % | clean error % | gap (points) |",
           "|---|---|---|---|---|---|"]
    rows = {(v["validation_attack"], v["extractor"], len(v["validation_users"])): v
            for v in validations}  # duplicate runs count once
    for (attack, model, n), v in sorted(rows.items()):
        out.append(f"| {attack} | {model} | {n} | {_pct(v['protection_rate'])} | "
                   f"{_pct(v['clean_error'])} | {100 * v['gap']:+.1f} |")
    return "\n".join(out)


def transfer_table(groups: list[dict]) -> str:
    """Table 4's shape: an attack made once against old models (PGD on the oldest eras), and
    each later model's error on clean pictures and on the attacked users, by date."""
    attacked = [g for g in groups if g["attack"] == "pgd" and is_plain(g)]
    if not attacked:
        return ""
    clean = clean_baselines(groups)
    out = ["| model | date | error %, clean pictures | error %, attacked users |",
           "|---|---|---|---|"]
    for g in sorted(attacked, key=lambda g: (g["date"], g["system_name"])):
        base = clean.get((g["experiment"], g["system_name"], g["dataset"]))
        out.append(f"| {g['system_name']} | {g['date']} | "
                   f"{_pct(base['protection_mean'] if base else None)} | "
                   f"{_pct(g['protection_mean'])} ± {_pct(g['protection_std'])} |")
    return "\n".join(out)


def experiment_figures(groups: list[dict], fig_dir: Path, stem: str, syn: bool) -> list[Path]:
    """The figures one experiment's rows can fill, as `<experiment>_<figure>.png`."""
    return [p for p in (
        figures.protection_by_extractor(groups, fig_dir / f"{stem}_protection.png", syn),
        figures.unprotected_curve(groups, fig_dir / f"{stem}_unprotected.png", syn),
        figures.protection_vs_distractors(groups, fig_dir / f"{stem}_distractors.png", syn),
        figures.wiseft_curve(groups, fig_dir / f"{stem}_wiseft.png", syn),
        figures.paired_bars(groups, "system", fig_dir / f"{stem}_combined.png", syn,
                            "combined systems"),
        figures.paired_bars(groups, "classifier", fig_dir / f"{stem}_classifiers.png", syn,
                            "classifiers"),
    ) if p is not None]


def experiment_section(experiment, groups: list[dict], detectors: list[dict], fig_dir: Path,
                       syn: bool, validations: list[dict] = (),
                       attackers: list[dict] = (), title: str | None = None,
                       stem: str | None = None) -> list[str]:
    """One experiment's tables and figures, under what it reproduces; figures are named by
    `stem` (default: the experiment)."""
    md = [f"## {experiment or 'run'}" + (f": {title}" if title else ""), ""]
    stem = stem or str(experiment or "run")
    if groups:
        md += [protection_table(groups), ""]
    if gaps := gap_table(attackers):
        md += [gaps, ""]
    if transfer := transfer_table(groups):
        md += ["### Transfer across time (Table 4: PGD made against the oldest eras)", "",
               transfer, ""]
    if detectors:
        md += [detector_tables(detectors), ""]
    if validations:
        md += [validation_table(validations), ""]
    made = experiment_figures(groups, fig_dir, stem, syn)
    if detectors and (heatmap := figures.detector_transfer(
            detectors, fig_dir / f"{stem}_detector_transfer.png", syn)):
        made.append(heatmap)
    md += [f"![{p.stem}](figures/{p.name})" for p in made]
    return md + ([""] if made else [])


def write_csv(groups: list[dict], path: Path) -> None:
    buf = io.StringIO()
    if groups:
        # rows of different systems carry different labels (alpha, system, ...): all columns
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for g in groups for k in g)))
        writer.writeheader()
        for g in groups:
            writer.writerow({**g, "seeds": " ".join(map(str, g["seeds"]))})
    atomic_write_text(path, buf.getvalue())


def write_records_csv(records: list[dict], path: Path) -> bool:
    """Detector or validation records, one row each, their scalar fields as columns (lists,
    such as a validation's users, are joined by spaces); nothing written without records."""
    if not records:
        path.unlink(missing_ok=True)  # a report rebuilt without them keeps no stale file
        return False
    fields = list(dict.fromkeys(k for r in records for k in r if not isinstance(r[k], dict)))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in records:
        writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v
                         for k, v in r.items() if k in fields})
    atomic_write_text(path, buf.getvalue())
    return True


def worlds_line(data: Collected) -> str:
    """Which world each row comes from: the world, its data set(s) and models."""
    parts = []
    for world in data.worlds:
        part = data.in_world(world)
        sets = sorted({str(r.get("dataset")) for r in part.runs + part.attackers if r.get("dataset")})
        models = sorted({r["extractor"] for r in part.attackers})
        parts.append(f"**{world}** (data: {', '.join(sets) or '-'}; models: "
                     f"{', '.join(models) or '-'})")
    return ("Worlds: " + "; ".join(parts) + ". A world casts a model in each of the paper's "
            "roles (conf/world); the `world` and `extractor_role` columns of results.csv say "
            "which row comes from where.")


def not_testable_section(runs: list[dict]) -> list[str]:
    """Experiments whose model has no player in their world (the real world's CLIP)."""
    lines = {(r.get("world"), r.get("experiment"), r["not_testable"]) for r in runs
             if r.get("not_testable")}
    if not lines:
        return []
    return ["## Not testable here", ""] + [
        f"- {experiment} in the {world} world: {why}" for world, experiment, why in sorted(lines)
    ] + [""]


def build_report(root: str | Path, out: str | Path | None = None,
                 world: str | None = None) -> Path:
    """Aggregate every results.jsonl below `root` (of one world, if given); returns the
    report.md written."""
    root = Path(root)
    out = Path(out or root)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    data: Collected = collect(root)
    if world is not None:
        data = data.in_world(world)
    if not (data.attackers or data.detectors or data.validations or data.runs):
        raise SystemExit(f"no results.jsonl records below {root}"
                         + (f" of the {world} world" if world else "") + ": nothing to report")
    groups = group_attackers(data.attackers)
    syn = data.synthetic
    write_csv(groups, out / "results.csv")
    extra = [(kind, f"{kind}s.csv") for kind, records in (("detector", data.detectors),
                                                          ("validation", data.validations))
             if write_records_csv(records, out / f"{kind}s.csv")]
    md = ["# FaceCure report", ""]
    if syn:
        md += ["> **These results are on synthetic faces** (FaceCure's embedded default: procedurally "
               "rendered identities and an embedded zoo of small extractors), not on FaceScrub or "
               "PubFig. They check the pipeline and the paper's qualitative claims; they are not the "
               "paper's numbers.", ""]
    md += [f"Source: `{root}` ({len(data.runs)} runs, {len(data.attackers)} attacker records). "
           "Protection rate: share of an attacker's unperturbed test pictures the trainer's model "
           "does not recognise, mean ± std over attacker users (seeds pooled); clean accuracy: "
           "the other users' test pictures. Open-set: as a face-search engine runs it, a search "
           "returns someone only when its distance passes a threshold set on the trainer's clean "
           "gallery (at FPIR 1e-2, one search in a hundred for a person not in the gallery "
           "returns someone); an attacker is protected when no search returns them, so open-set "
           "protection is at least the closed-set one. Budgets are measured on the stored pictures. "
           "`results.csv` holds every protection row below"
           + "".join(f", `{name}` every {kind} record" for kind, name in extra) + ".", ""]
    if root.is_dir() and (jobs := sweep_status(root)["failed"]):
        md += ["**Jobs without results.** These job folders hold a config but no results.jsonl "
               "(a failure, a kill, or a job still running); their numbers are missing below:",
               ""] + [f"- {failure_line(root, job)}" for job in jobs] + [""]
    if data.unreadable:
        md += [f"Unreadable lines (a run killed while writing?): {', '.join(data.unreadable)}", ""]
    worlds = data.worlds
    md += [worlds_line(data), ""]
    names = {g["experiment"] for g in groups} | {
        r.get("experiment") for r in data.detectors + data.validations}
    info = experiment_info(data.runs + data.attackers + data.detectors + data.validations)
    for experiment in experiment_order(names, info):
        for world in worlds:
            part = data.in_world(world)
            rows = [g for g in groups if g["experiment"] == experiment
                    and record_world(g) == world]
            detectors = [d for d in part.detectors if d.get("experiment") == experiment]
            if not rows and not detectors:
                continue
            title = (info.get(experiment) or (None, None))[1]
            if len(worlds) > 1:
                title = f"{title or experiment} ({world} world)"
            md += experiment_section(
                experiment, rows, detectors, fig_dir, syn,
                [v for v in part.validations if v.get("experiment") == experiment],
                [a for a in part.attackers if a.get("experiment") == experiment], title,
                stem=f"{experiment}_{world}" if len(worlds) > 1 else None)
    md += not_testable_section(data.runs)
    checks = run_checks(groups, data.detectors)
    md += checks_section(checks)
    # for scripts (and --checks): each check's verdict and the rows it judged
    atomic_write_text(out / "checks.json", json.dumps(
        [{"name": c.name, "claim": c.claim, "passed": c.passed,
          "rows": [{"row": what, "passed": ok} for what, ok in c.results]} for c in checks],
        indent=1))
    path = out / "report.md"
    atomic_write_text(path, "\n".join(md))
    return path


def log_to_wandb(report: Path, mode: str, project: str) -> None:
    """The report's table and figures (plots, never face pictures) as one W&B run."""
    import wandb

    run = wandb.init(project=project, mode=mode, dir=str(report.parent), job_type="report",
                     name=f"report/{report.parent.name}",
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    try:
        for name in ("results", "detectors", "validations"):
            path = report.parent / f"{name}.csv"
            rows = list(csv.reader(io.StringIO(path.read_text()))) if path.exists() else []
            if rows:
                run.log({f"report/{name}": wandb.Table(columns=rows[0], data=rows[1:])})
        for png in sorted((report.parent / "figures").glob("*.png")):
            run.log({f"report/{png.stem}": wandb.Image(str(png))})
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="facecure-report", description=__doc__)
    parser.add_argument("folder", help="a run folder or a multirun folder (searched recursively)")
    parser.add_argument("--out", help="where to write report.md, results.csv, figures/ (default: folder)")
    parser.add_argument("--wandb", choices=["offline", "online"], default=None,
                        help="also log the report's table and figures to W&B (offline: sync later)")
    parser.add_argument("--wandb-project", default="facecure")
    parser.add_argument("--world", help="only this world's records (embedded, real)")
    parser.add_argument("--checks", action="store_true",
                        help="exit 1 when a check of the paper's claims fails (report.md, Checks)")
    parser.add_argument("--compare", metavar="REFERENCE",
                        help="a reference report folder or results.csv (e.g. docs/reproduce): "
                             "writes compare.md, each protection row beside the reference's, and "
                             "exits 1 if any moved beyond the two runs' 95%% intervals")
    args = parser.parse_args(argv)
    report = build_report(args.folder, args.out, args.world)
    if args.wandb:
        log_to_wandb(report, args.wandb, args.wandb_project)
    print(report)
    failed = []
    if args.checks:  # as the report just judged them
        failed = [c["name"] for c in json.loads((report.parent / "checks.json").read_text())
                  if c["passed"] is False]
    moved = 0
    if args.compare:
        text, moved = compare(args.compare, report.parent / "results.csv")
        atomic_write_text(report.parent / "compare.md", text)
        print(report.parent / "compare.md")
    if failed:
        raise SystemExit(f"checks failed: {', '.join(failed)} (see {report}, Checks)")
    if moved:
        raise SystemExit(f"{moved} rows moved beyond their intervals (or are in one report "
                         f"only): see {report.parent / 'compare.md'}")

if __name__ == "__main__":
    main()
