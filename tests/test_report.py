"""`facecure-report`: records of real tiny runs -> report.md, results.csv and figures."""
import csv
import json
import os
import subprocess
import sys

from conftest import TINY
from PIL import Image

from facecure.app import run
from facecure.report import build_report, collect


def test_report_of_a_small_sweep_folder(compose_cfg, tmp_path):
    sweep = tmp_path / "sweep"
    for n, unprotected in enumerate([0, 1]):  # two jobs: the Fig. 7 curve needs two points
        run(compose_cfg(*TINY, f"attack.unprotected={unprotected}", "experiment_name=unprotected",
                        f"+run_dir={sweep / f'{n}_unprotected_{unprotected}'}"))
    (sweep / "2_broken").mkdir()
    (sweep / "2_broken" / "results.jsonl").write_text('{"kind": "run"}\n{"kind": "attac')

    data = collect(sweep)
    assert len(data.runs) == 3 and data.synthetic
    assert data.unreadable == [f"{sweep / '2_broken' / 'results.jsonl'}:2"]

    report = build_report(sweep)
    text = report.read_text()
    assert "synthetic faces" in text
    assert "| unprotected | fawkes_v10 (high) | zoo_softmax |" in text
    assert "Unreadable lines" in text
    for figure in ("protection_by_extractor.png", "unprotected.png"):
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
    assert "| fawkes_v10/high | 90.0 | 80.0 | 70.0 | 0.950 | 25 / 20 | scratch |" in text
    assert "| lowkey | 0.600 | 0.950 |" in text  # transfer row: train lowkey, test fawkes / lowkey


def test_empty_folder_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "facecure.report.build", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no results.jsonl records" in out.stderr
