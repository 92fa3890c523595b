"""Two reports' protection rows side by side: did a rerun (another machine, a cold cache, a
changed attack) reproduce the reference numbers? `facecure-report <folder> --compare <ref>`.

Rows meet on the grouping keys (experiment, attack, model, defense, ...). A row is flagged
when its protection rate moved by more than the two runs' 95% intervals together (Student t
over attacker users, from each row's std and count): a conservative test, so a flag means the
rerun did not reproduce the number, and no flag means the spread over attackers covers the move.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from facecure.evaluation.stats import ci95
from facecure.report.groups import GROUP_KEYS

KEYS = (*GROUP_KEYS, "system_name")


def read_rows(path: str | Path) -> dict[tuple, dict]:
    """A report's results.csv (or the folder holding it), keyed by its grouping keys."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"no results.csv at {path}: run facecure-report on that folder first")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return {tuple(r.get(k, "") for k in KEYS): r for r in rows}


def _ci95(row: dict) -> float:
    return ci95(float(row["protection_std"]), int(row["n_attackers"])) or 0.0


def compare(reference: str | Path, rerun: str | Path) -> tuple[str, int]:
    """Markdown of every row of either report, and how many rows moved beyond their intervals
    (rows found in one report only count as moved)."""
    ref, new = read_rows(reference), read_rows(rerun)
    out = ["# Rerun against reference", "", f"Reference: `{reference}`; rerun: `{rerun}`.", "",
           "| experiment | attack | trainer's model | reference % | rerun % | move (points) | "
           "both intervals (points) | |", "|---|---|---|---|---|---|---|---|"]
    moved = same = 0
    for key in sorted(set(ref) | set(new), key=lambda k: tuple(map(str, k))):
        a, b = ref.get(key), new.get(key)
        row = a or b
        head = f"| {row['experiment']} | {row['attack_name']} | {row['system_name']} |"
        if a is None or b is None:
            moved += 1
            side = "rerun only" if a is None else "reference only"
            value = f"{100 * float(row['protection_mean']):.1f}"
            out.append(f"{head} {'-' if a is None else value} | {'-' if b is None else value} "
                       f"| | | {side} |")
            continue
        delta = float(b["protection_mean"]) - float(a["protection_mean"])
        allowed = _ci95(a) + _ci95(b)
        flag, unmoved = abs(delta) > allowed + 1e-9, abs(delta) < 5e-4  # to the table's precision
        moved, same = moved + flag, same + unmoved
        verdict = "**moved**" if flag else ("same" if unmoved else "within")
        out.append(f"{head} {100 * float(a['protection_mean']):.1f} | "
                   f"{100 * float(b['protection_mean']):.1f} | {100 * delta:+.1f} | "
                   f"{100 * allowed:.1f} | {verdict} |")
    total = len(set(ref) | set(new))
    out += ["", f"Of {total} rows: {same} the same, {total - same - moved} moved within the two "
            f"runs' intervals, {moved} moved beyond them or are in one report only. A rerun with "
            "the same seeds and the same stores reproduces every row exactly, and so does one "
            "from an empty cache on the same kind of CPU (every fit runs on a fixed thread "
            "count). On another CPU kind (AVX2 / AVX-512 kernels) or a GPU the trained models "
            "differ in their last bits and every row can move: the tolerance of such a rerun "
            "is the two runs' 95% intervals over attackers, not the digits (docs/experiments.md, "
            "Reruns; each run record's `machine` says what it ran on)."]
    return "\n".join(out), moved
