"""Two reports' protection rows side by side. `facecure-report <folder> --compare <ref>`.

A rerun (another machine, a cold cache, a changed attack) against its reference: rows meet on
the grouping keys (experiment, attack, model, defense, ...). A row is flagged when its
protection rate moved by more than the two runs' 95% intervals together (Student t over
attacker users, from each row's std and count): a conservative test, so a flag means the rerun
did not reproduce the number, and no flag means the spread over attackers covers the move.

Two worlds (`<real run> --compare <embedded run>`): rows meet on the paper's model each
extractor plays (`extractor_role`: webface, celeb1m, ...) and the paper's attack, and the
table says where the two worlds agree (the difference within both intervals) and where they
differ. Settings a world sizes for its machine (Fawkes v0.3's mode) do not keep rows apart.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from facecure.evaluation.stats import ci95
from facecure.report.groups import GROUP_KEYS
from facecure.worlds import record_world, row_role

KEYS = (*GROUP_KEYS, "system_name")
# What does not tell rows of two worlds apart: their data, their models' names (the role
# does), an attack's mode and label (a world's scale sets Fawkes v0.3's mode).
ACROSS_WORLDS_DROP = ("world", "dataset", "extractor", "attack_mode", "attack_label", "system_name")
PAPER_ATTACK = {"lowkey_dssim": "lowkey"}  # the embedded world's stand-in for LowKey


def read_rows(path: str | Path) -> list[dict]:
    """A report's results.csv (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"no results.csv at {path}: run facecure-report on that folder first")
    return list(csv.DictReader(io.StringIO(path.read_text())))


def worlds_of(rows: list[dict]) -> set[str]:
    return {record_world(r) for r in rows}


def row_key(row: dict, across_worlds: bool) -> tuple:
    if not across_worlds:
        return tuple(row.get(k, "") for k in KEYS)
    model = row_role(row) or row.get("extractor", "")
    attack = PAPER_ATTACK.get(row.get("attack", ""), row.get("attack", ""))
    return (attack, model, *(row.get(k, "") for k in GROUP_KEYS
                             if k not in ACROSS_WORLDS_DROP and k != "attack"))


def keyed(rows: list[dict], across_worlds: bool) -> dict[tuple, dict]:
    return {row_key(r, across_worlds): r for r in rows}


def _ci95(row: dict) -> float:
    return ci95(float(row["protection_std"]), int(row["n_attackers"])) or 0.0


def _label(row: dict, across_worlds: bool) -> str:
    if not across_worlds:
        return row["system_name"]
    role = row_role(row)
    return f"{role} ({row['system_name']})" if role else row["system_name"]


def compare(reference: str | Path, rerun: str | Path) -> tuple[str, int]:
    """Markdown of every row of either report, and how many rows moved beyond their intervals
    (rows found in one report only count as moved; two worlds: 0, the table says where they
    differ)."""
    ref_rows, new_rows = read_rows(reference), read_rows(rerun)
    across = worlds_of(ref_rows) != worlds_of(new_rows)
    ref, new = keyed(ref_rows, across), keyed(new_rows, across)
    names = ("reference", "rerun") if not across else (
        "/".join(sorted(worlds_of(ref_rows))), "/".join(sorted(worlds_of(new_rows))))
    out = [f"# {'Two worlds' if across else 'Rerun against reference'}", "",
           f"Reference: `{reference}` ({names[0]}); rerun: `{rerun}` ({names[1]}).", ""]
    if across:
        out += ["Rows meet on the paper's model each extractor plays and the paper's attack "
                "(conf/world). *agree*: the difference lies within the two rows' 95% intervals "
                "together; *differ*: beyond them.", ""]
    model = "paper's model (this world's)" if across else "trainer's model"
    out += [f"| experiment | attack | {model} | {names[0]} % | {names[1]} % | move (points) | "
            "both intervals (points) | |", "|---|---|---|---|---|---|---|---|"]
    moved = same = 0
    for key in sorted(set(ref) | set(new), key=lambda k: tuple(map(str, k))):
        a, b = ref.get(key), new.get(key)
        row = a or b
        head = f"| {row['experiment']} | {row['attack_name']} | {_label(row, across)} |"
        if a is None or b is None:
            moved += 1
            side = f"{names[1]} only" if a is None else f"{names[0]} only"
            value = f"{100 * float(row['protection_mean']):.1f}"
            out.append(f"{head} {'-' if a is None else value} | {'-' if b is None else value} "
                       f"| | | {side} |")
            continue
        delta = float(b["protection_mean"]) - float(a["protection_mean"])
        allowed = _ci95(a) + _ci95(b)
        flag, unmoved = abs(delta) > allowed + 1e-9, abs(delta) < 5e-4  # to the table's precision
        moved, same = moved + flag, same + unmoved
        if across:
            verdict = "**differ**" if flag else "agree"
        else:
            verdict = "**moved**" if flag else ("same" if unmoved else "within")
        out.append(f"{head} {100 * float(a['protection_mean']):.1f} | "
                   f"{100 * float(b['protection_mean']):.1f} | {100 * delta:+.1f} | "
                   f"{100 * allowed:.1f} | {verdict} |")
    total = len(set(ref) | set(new))
    if across:  # a difference is a finding about the worlds, not a failed rerun: exit 0
        one = sum(k not in ref or k not in new for k in set(ref) | set(new))
        differ = moved - one
        out += ["", f"Of {total} rows, {total - one} are in both worlds: {total - one - differ} "
                f"agree within their intervals, {differ} differ; {one} are in one world only "
                "(a model or an attack with no counterpart in the other)."]
        return "\n".join(out), 0
    out += ["", f"Of {total} rows: {same} the same, {total - same - moved} moved within the two "
            f"runs' intervals, {moved} moved beyond them or are in one report only. A rerun with "
            "the same seeds and the same stores reproduces every row exactly, and so does one "
            "from an empty cache on the same kind of CPU (every fit runs on a fixed thread "
            "count). On another CPU kind (AVX2 / AVX-512 kernels) or a GPU the trained models "
            "differ in their last bits and every row can move: the tolerance of such a rerun "
            "is the two runs' 95% intervals over attackers, not the digits (docs/experiments.md, "
            "Reruns; each run record's `machine` says what it ran on)."]
    return "\n".join(out), moved
