"""`facecure-report`: records of real tiny runs -> report.md, results.csv and figures."""
import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import TINY
from PIL import Image

from facecure.app import run
from facecure.report import build_report, collect


def test_report_of_a_small_sweep_folder(compose_cfg, tmp_path):
    sweep = tmp_path / "sweep"
    for n, unprotected in enumerate([0, 1]):  # two jobs: the Fig. 7 curve needs two points
        run(compose_cfg(*TINY, f"attack.unprotected={unprotected}", "experiment_name=unprotected",
                        "experiment_info.title='Fig. 7: users who leave some pictures unperturbed'",
                        f"+run_dir={sweep / f'{n}_unprotected_{unprotected}'}"))
    (sweep / "2_broken").mkdir()
    (sweep / "2_broken" / "results.jsonl").write_text('{"kind": "run"}\n{"kind": "attac')

    data = collect(sweep)
    assert len(data.runs) == 3 and data.synthetic
    assert data.unreadable == [f"{sweep / '2_broken' / 'results.jsonl'}:2"]

    report = build_report(sweep)
    text = report.read_text()
    assert "synthetic faces" in text
    assert "## unprotected: Fig. 7" in text  # a section per experiment, under its paper figure
    assert "| fawkes_v10 (high) | zoo_softmax |" in text
    assert "Unreadable lines" in text
    for figure in ("unprotected_protection.png", "unprotected_unprotected.png"):
        assert f"figures/{figure}" in text
        with Image.open(sweep / "figures" / figure) as img:
            assert img.size[0] > 300 and img.size[1] > 200
    rows = list(csv.DictReader(open(sweep / "results.csv")))
    attacked = [r for r in rows if r["attack"] == "fawkes_v10"]
    assert sorted(float(r["unprotected_mean"]) for r in attacked) == [0.0, 1.0]
    # The report's numbers are the runs' numbers: pooled means equal the runs' aggregates.
    for n in range(2):
        aggs = [json.loads(line) for line in open(sweep / f"{n}_unprotected_{n}" / "results.jsonl")
                if '"aggregate"' in line]
        mine = next(a for a in aggs if a["attack"] == "fawkes_v10")
        row = next(r for r in attacked if float(r["unprotected_mean"]) == n)
        assert abs(float(row["protection_mean"]) - mine["protection_rate_mean"]) < 1e-9


def test_detector_tables_and_cli(tmp_path):
    rows = [{"kind": "detector", "train_attack": t, "test_attack": s, "accuracy": 0.9,
             "precision": 0.8, "recall": 0.7, "auc": 0.95 if t == s else 0.6, "synthetic": True,
             "n_train_users": 25, "n_test_users": 20, "init": "scratch"}
            for t in ("fawkes_v10/high", "lowkey") for s in ("fawkes_v10/high", "lowkey")]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run([sys.executable, "-m", "facecure.report.build", str(tmp_path),
                          "--wandb", "offline"], capture_output=True, text=True, check=True,
                         env={**os.environ, "WANDB_MODE": "offline"})
    text = (tmp_path / "report.md").read_text()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))  # logged, offline
    assert out.stdout.strip().endswith("report.md")
    assert "| fawkes_v10/high | 90.0 | 80.0 | 70.0 | 0.950 | - | - | 25 / 20 | scratch |" in text
    assert "| lowkey | 0.600 | 0.950 |" in text  # transfer row: train lowkey, test fawkes / lowkey
    assert "`detectors.csv` every detector record" in text
    heatmap = tmp_path / "figures" / "run_detector_transfer.png"
    assert f"](figures/{heatmap.name})" in text
    assert Image.open(heatmap).size[0] > 300
    with open(tmp_path / "detectors.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["train_attack"], r["test_attack"], float(r["auc"])) for r in table] == [
        (r["train_attack"], r["test_attack"], r["auc"]) for r in rows]
    assert not (tmp_path / "validations.csv").exists()


def test_validation_records_make_a_table_under_their_experiment(tmp_path):
    from facecure.report.build import experiment_section, validation_table
    rows = [{"kind": "validation", "experiment": "adaptive", "validation_attack": "lowkey",
             "extractor": name, "validation_users": ["p1", "p2"], "protection_rate": p,
             "clean_error": e, "gap": p - e}
            for name, p, e in (("zoo_softmax", 0.9, 0.05), ("zoo_softmax+robust", 0.3, 0.1))]
    table = validation_table(rows + rows[:1])  # a duplicate run counts once
    assert table.count("| lowkey |") == 2
    assert "| lowkey | zoo_softmax+robust | 2 | 30.0 | 10.0 | +20.0 |" in table
    assert validation_table([]) == ""
    section = "\n".join(experiment_section("adaptive", [], [], tmp_path, True, rows))
    assert "held-out public users" in section
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "detectors.csv").write_text("stale\n")  # from an earlier report of this folder
    build_report(tmp_path)
    with open(tmp_path / "validations.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["extractor"], r["validation_users"], float(r["gap"])) for r in table] == [
        ("zoo_softmax", "p1 p2", 0.9 - 0.05), ("zoo_softmax+robust", "p1 p2", 0.3 - 0.1)]
    assert not (tmp_path / "detectors.csv").exists()


def test_a_detector_trained_on_a_mix_is_scored_on_each_part_in_table_2():
    from facecure.report.build import detector_tables

    mix = {"kind": "detector", "train_attack": "fawkes_v10/low+mid+high", "accuracy": 0.9,
           "precision": 0.9, "recall": 0.9, "train_attack_fingerprint": "mix",
           "train_part_fingerprints": ["low", "high"], "n_train_users": 25, "n_test_users": 20}
    rows = [{**mix, "test_attack": "fawkes_v10/low", "test_attack_fingerprint": "low", "auc": 0.91},
            {**mix, "test_attack": "lowkey", "test_attack_fingerprint": "lk", "auc": 0.52}]
    table_2 = detector_tables(rows).split("### Detector transfer")[0]
    assert "| fawkes_v10/low (trained on fawkes_v10/low+mid+high) | 90.0 |" in table_2
    assert "0.910" in table_2 and "0.520" not in table_2  # LowKey is not part of the mix
    assert "Unchanged twins" not in table_2  # records without the diagnostic say "-"


def test_table_2_gives_the_share_of_unchanged_twins_and_the_auc_without_them():
    from facecure.report.build import detector_tables

    row = {"kind": "detector", "train_attack": "fawkes_v10/low", "test_attack": "fawkes_v10/low",
           "accuracy": 0.88, "precision": 0.97, "recall": 0.78, "auc": 0.943,
           "unchanged_share": 0.088, "auc_changed": 0.97, "n_train_users": 25,
           "n_test_users": 20, "init": "scratch"}
    table = detector_tables([row])
    assert "| fawkes_v10/low | 88.0 | 97.0 | 78.0 | 0.943 | 8.8 | 0.970 | 25 / 20 | scratch |" in table
    assert "Unchanged twins" in table


def test_empty_folder_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "facecure.report.build", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no results.jsonl records" in out.stderr


def test_models_of_one_name_but_other_weights_are_separate_rows_named_by_their_jobs():
    from facecure.report.figures import tick_label
    from facecure.report.groups import group_attackers

    def record(job, fp, attacker, rate):
        return {"experiment": "adaptive", "attack": "fawkes_v10", "extractor": "zoo_softmax+robust",
                "defense": "robust", "extractor_fingerprint": fp, "run_dir": f"adaptive/{job}",
                "seed": 0, "attacker": attacker, "attack_fingerprint": "a", "protection_rate": rate,
                "clean_accuracy": 0.9}

    rows = group_attackers([record("lr=1e-4", "w1", "u1", 0.5), record("lr=1e-4", "w1", "u2", 0.3),
                            record("lr=1e-3", "w2", "u1", 0.1), record("lr=1e-3", "w2", "u2", 0.1),
                            record("again", "w1", "u1", 0.5)])  # a duplicate run: counted once
    by_name = {r["system_name"]: r for r in rows}
    assert set(by_name) == {"zoo_softmax+robust (again, lr=1e-4)", "zoo_softmax+robust (lr=1e-3)"}
    assert by_name["zoo_softmax+robust (lr=1e-3)"]["protection_mean"] == 0.1
    assert by_name["zoo_softmax+robust (again, lr=1e-4)"]["n_attackers"] == 2
    clean = group_attackers([{**record("lr=1e-4", "w1", "u1", 0.0), "attack": "none",
                              "attack_label": "lowkey (DSSIM stand-in)"}])
    assert clean[0]["attack_name"] == "none"  # the baseline, though it carries the run's label
    clean = group_attackers([{**record(job, "w1", "u1", 0.0), "attack": "none", "attack_label": label}
                             for job, label in (("a", "lowkey (DSSIM stand-in)"), ("b", None))])
    assert len(clean) == 1  # one clean baseline whichever attack its jobs ran
    classifiers = group_attackers([{**record("x", "w1", "u1", rate), "defense": "end_to_end",
                                    "extractor": "zoo_softmax", "classifier": "end_to_end",
                                    "robust_public": robust}
                                   for robust, rate in ((False, 0.5), (True, 0.2))])
    assert sorted((r["system_name"], r["protection_mean"]) for r in classifiers) == [
        ("zoo_softmax [end_to_end, robust public data]", 0.2), ("zoo_softmax [end_to_end]", 0.5)]
    single = group_attackers([record("lr=1e-4", "w1", "u1", 0.5)])
    assert single[0]["system_name"] == "zoo_softmax+robust"  # one model: no job names
    assert tick_label("zoo_softmax+zoo_clip [combined: threshold]") == \
        "zoo_softmax\n+zoo_clip\n[combined:\nthreshold]"


def test_transfer_table_lists_each_model_by_date_with_its_clean_and_attacked_error():
    from facecure.report.build import transfer_table
    from facecure.report.groups import group_attackers

    def record(extractor, attack, rate):
        return {"experiment": "transfer_time", "attack": attack, "extractor": extractor,
                "defense": "none", "extractor_fingerprint": extractor, "run_dir": extractor,
                "seed": 0, "attacker": "u1", "attack_fingerprint": attack,
                "protection_rate": rate, "clean_accuracy": 0.9}

    groups = group_attackers([record("zoo_clip", "pgd", 0.2), record("zoo_clip", "none", 0.05),
                              record("zoo_softmax", "pgd", 1.0), record("zoo_softmax", "none", 0.0)])
    lines = transfer_table(groups).splitlines()
    assert lines[2].startswith("| zoo_softmax | 2015-01 | 0.0 | 100.0 ±")
    assert lines[3].startswith("| zoo_clip |") and "| 5.0 | 20.0 ±" in lines[3]
    assert transfer_table(group_attackers([record("zoo_clip", "none", 0.1)])) == ""


def test_sections_follow_the_papers_order_and_each_has_its_own_figure(tmp_path):
    from omegaconf import OmegaConf

    from facecure.paths import CONF_DIR
    from facecure.report.build import experiment_order

    # each experiment's config says where it goes (no central list)
    info = {e: (OmegaConf.load(CONF_DIR / "experiment" / f"{e}.yaml").experiment_info.paper_order,
                None) for e in ("pubfig", "baseline", "adaptive")}
    assert experiment_order({"pubfig", "mine", "baseline", None, "adaptive"}, info) == \
        ["baseline", "adaptive", "pubfig", None, "mine"]
    titles = {"oblivious": (3, "Figs. 4 and 5: the oblivious trainer"),
              "baseline": (1, "Fig. 2 (left): each protection")}
    rows = [{"kind": "attacker", "experiment": e, "attack": a, "attack_mode": "high",
             "extractor": "zoo_softmax", "defense": "none", "extractor_fingerprint": "w", "seed": 0,
             "attacker": u, "attack_fingerprint": a, "protection_rate": rate, "clean_accuracy": 0.9,
             "synthetic": True, "paper_order": titles[e][0], "experiment_title": titles[e][1]}
            for e in ("oblivious", "baseline") for a, rate in (("none", 0.0), ("fawkes_v10", 1.0))
            for u in ("u1", "u2")]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = build_report(tmp_path).read_text()
    assert text.index("## baseline: Fig. 2 (left)") < text.index("## oblivious: Figs. 4 and 5")
    for e in ("baseline", "oblivious"):
        assert f"figures/{e}_protection.png" in text and (tmp_path / "figures" / f"{e}_protection.png").exists()


def test_the_gap_table_pairs_each_model_with_its_own_clean_error_per_attacker():
    from facecure.report.gaps import gap_table, paired_gaps

    def rec(fp, attack, attacker, rate, **extra):
        return {"kind": "attacker", "experiment": "adaptive", "dataset": "d", "seed": 0,
                "extractor": fp.split("-")[0], "extractor_fingerprint": fp,
                "defense": "robust" if "robust" in fp else "none", "attack": attack,
                "attack_fingerprint": attack, "attacker": attacker, "protection_rate": rate,
                **extra}
    base, robust = "m-1", "m+robust-2"
    rows = [rec(base, "none", a, 0.0) for a in ("a1", "a2")]
    rows += [rec(base, "lowkey", "a1", 1.0), rec(base, "lowkey", "a2", 0.5)]
    rows += [rec(robust, "none", "a1", 0.25), rec(robust, "none", "a2", 0.0)]
    rows += [rec(robust, "lowkey", "a1", 0.5), rec(robust, "lowkey", "a2", 0.0)]
    rows += [rec(robust, "lowkey", "a1", 0.5)]  # a second run scoring the same model: once
    rows += [rec(robust, "lowkey", "a3", 1.0)]  # no clean record for a3: left out
    rows += [rec(robust, "lowkey", "a1", 0.0, system="top2")]  # a combined system: not a model
    gaps = {g["model"]: g for g in paired_gaps(rows)}
    assert set(gaps) == {"m", "m+robust"}
    assert gaps["m"]["attackers"] == 2 and gaps["m"]["gap"] == pytest.approx(0.75)
    r = gaps["m+robust"]
    assert (r["attackers"], r["protection"], r["clean_error"]) == (2, 0.25, 0.125)
    assert r["gap"] == pytest.approx(0.125) and r["ci95"] > 0
    table = gap_table(rows)
    assert "| lowkey | m+robust | 2 | 25.0 | 12.5 | +12.5 |" in table
    # a second seed: one more pair, the same two attackers
    seed_1 = [rec(robust, "none", "a1", 0.0, seed=1), rec(robust, "lowkey", "a1", 0.5, seed=1)]
    r = {g["model"]: g for g in paired_gaps(rows + seed_1)}["m+robust"]
    assert (r["attackers"], r["pairs"]) == (2, 3) and r["gap"] == pytest.approx(0.25)
    # no robust model in the experiment: no table (the oblivious sweep has none)
    assert gap_table([r for r in rows if r["defense"] == "none"]) == ""


def test_the_report_names_the_jobs_that_left_no_results(tmp_path):
    rows = [{"kind": "detector", "train_attack": "a", "test_attack": "a", "accuracy": 0.9,
             "precision": 0.9, "recall": 0.9, "auc": 0.9}]
    done, failed, killed = (tmp_path / f"attack={a}" for a in ("a", "b", "c"))
    for job in (done, failed, killed):
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("{}\n")
    (done / "results.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (failed / "error.txt").write_text("Traceback ...\nValueError: attack 'b' has no setting x\n")
    text = build_report(tmp_path).read_text()
    assert "**Jobs without results.**" in text
    assert "- attack=b: ValueError: attack 'b' has no setting x" in text
    assert "- attack=c: died without a traceback" in text
    assert "attack=a:" not in text


def test_the_transfer_table_keeps_the_order_the_runs_list_their_attacks():
    from facecure.report.build import detector_tables

    order = ["fawkes_v10/low", "fawkes_v10/mid", "fawkes_v10/high", "lowkey"]  # not alphabetical
    rows = [{"kind": "detector", "train_attack": t, "test_attack": s, "accuracy": 0.9,
             "precision": 0.9, "recall": 0.9, "auc": 0.9} for t in order for s in order]
    table_3 = detector_tables(rows).split("### Detector transfer")[1]
    assert "| train \\ test | " + " | ".join(order) + " |" in table_3
    assert [line.split(" |")[0][2:] for line in table_3.splitlines() if line.startswith("| f")
            or line.startswith("| l")] == order


def test_compare_sets_each_row_beside_the_reference_and_fails_on_a_real_move(tmp_path):
    from facecure.report.compare import KEYS, compare

    def write(folder, rates):
        folder.mkdir()
        rows = [{**{k: "" for k in KEYS}, "experiment": "baseline", "attack": attack,
                 "attack_name": attack, "extractor": "zoo_softmax", "system_name": "zoo_softmax",
                 "protection_mean": rate, "protection_std": 0.1, "n_attackers": 20}
                for attack, rate in rates.items()]
        with open(folder / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write(tmp_path / "ref", {"none": 0.025, "fawkes": 0.94, "lowkey": 0.97, "pgd": 0.5})
    write(tmp_path / "new", {"none": 0.025, "fawkes": 0.90, "lowkey": 0.50, "noise": 0.02})
    text, moved = compare(tmp_path / "ref", tmp_path / "new" / "results.csv")
    assert moved == 3  # lowkey beyond its intervals (2 x 4.7 points); pgd and noise in one only
    assert "| baseline | none | zoo_softmax | 2.5 | 2.5 | +0.0 | 9.4 | same |" in text
    assert "| baseline | fawkes | zoo_softmax | 94.0 | 90.0 | -4.0 | 9.4 | within |" in text
    assert "| baseline | lowkey | zoo_softmax | 97.0 | 50.0 | -47.0 | 9.4 | **moved** |" in text
    assert "| baseline | pgd | zoo_softmax | 50.0 | - | | | reference only |" in text
    assert "| baseline | noise | zoo_softmax | - | 2.0 | | | rerun only |" in text
