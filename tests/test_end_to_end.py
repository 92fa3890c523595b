"""A tiny run through the whole pipeline, via the library entry and via the `facecure` command."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY
from PIL import Image

from facecure.app import run
from facecure.results import read_results

REQUIRED = {"experiment", "attack", "extractor", "defense", "attacker", "protection_rate",
            "clean_accuracy", "n_test", "seed", "budget"}


def test_tiny_run_writes_records_and_repeats_exactly(compose_cfg, tmp_path):
    cfg = compose_cfg(*TINY, f"+run_dir={tmp_path / 'a'}")
    records = run(cfg)
    written = read_results(tmp_path / "a" / "results.jsonl")
    assert written[0]["kind"] == "run" and written[0]["versions"]["torch"]
    attackers = [r for r in written if r["kind"] == "attacker"]
    assert len(attackers) == 4  # 2 attackers x (clean baseline, fawkes_v10)
    assert all(REQUIRED <= set(r) for r in attackers)
    assert all(0 <= r["protection_rate"] <= 1 for r in attackers)
    aggregates = [r for r in written if r["kind"] == "aggregate"]
    assert {a["attack"] for a in aggregates} == {"none", "fawkes_v10"}
    for a in aggregates:
        assert {"protection_rate_mean", "protection_rate_std", "protection_rate_ci95",
                "clean_accuracy", "n_attackers"} <= set(a)
        # Open-set protection: a search that passes no threshold protects, so never below 1-NN's.
        assert a["open_protection_fpir1e-2_mean"] >= a["protection_rate_mean"] - 1e-9
        assert [t["fpir"] for t in a["open_set_thresholds"]] == [1e-2, 1e-3]
    cloaked = [r for r in attackers if r["attack"] == "fawkes_v10"]
    assert all(r["budget"]["linf_max"] <= 15 / 255 + 1e-6 for r in cloaked)
    assert (tmp_path / "a" / "config.yaml").exists()

    again = run(compose_cfg(*TINY, f"+run_dir={tmp_path / 'b'}"))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "timings"} for r in rs]  # noqa: E731
    assert strip(again) == strip(records)


def test_folder_data_with_bad_pictures_runs_to_the_end(compose_cfg, tmp_path):
    from test_data import make_odd_folder

    root = make_odd_folder(tmp_path / "faces")
    for name in ("dave", "erin"):  # enough identities for 2 attackers
        (root / name).mkdir()
        for i in range(3):
            Image.new("RGB", (30, 30), (i * 40, 100, 200 - i * 30)).save(root / name / f"{i}.png")
    out = tmp_path / "run"
    not_synthetic = [o for o in TINY if not o.startswith("data.")]
    run(compose_cfg(*not_synthetic, "data=folder", f"data.root={root}", f"+run_dir={out}"))
    skipped = json.loads((out / "skipped.json").read_text())
    named = {s.get("path", s.get("identity")) for s in skipped}
    assert str(root / "alice" / "broken.jpg") in named and "carol" in named
    run_record = read_results(out / "results.jsonl")[0]
    assert run_record["skipped"] == skipped


@pytest.mark.parametrize("logger", ["csv", "wandb"])
def test_cli_runs_with_hydra_run_dir(tmp_path, cache_dir, logger):
    out = tmp_path / "cli"
    env = {**os.environ, "FACECURE_CACHE": str(cache_dir)}
    cmd = [sys.executable, "-m", "facecure.cli", *TINY, f"logger={logger}", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Protection rate" in proc.stdout and str(out) in proc.stdout
    assert len(read_results(out / "results.jsonl")) == 7
    assert (out / ".hydra" / "config.yaml").exists()
    if logger == "csv":
        assert (out / "aggregates.csv").read_text().count("\n") == 3
    else:
        assert list((out / "wandb").glob("offline-run-*"))


def test_cli_config_typo_fails_clearly(tmp_path):
    cmd = [sys.executable, "-m", "facecure.cli", "extractor=no_such_model",
           f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no_such_model" in proc.stderr and "extractor" in proc.stderr


def test_mixed_attack_with_unprotected_pictures(compose_cfg, tmp_path):
    generic = [o for o in TINY if not o.startswith("attack.")]
    small = ["attack.first.surrogates=[zoo_softmax]", "attack.second.surrogates=[zoo_softmax]",
             "attack.first.steps=2", "attack.second.steps=2", "attack.first.image_size=null",
             "attack.second.image_size=null", "attack.first.candidates.n_identities=20",
             "attack.first.candidates.pictures_per_identity=2",
             "attack.first.candidates.image_size=32", "attack.unprotected=1"]
    records = run(compose_cfg(*generic, "attack=mixed", *small, f"+run_dir={tmp_path}"))
    mixed = [r for r in records if r["kind"] == "attacker" and r["attack"] == "mixed"]
    assert len(mixed) == 2
    for r in mixed:
        assert r["unprotected"] == 1 and r["n_perturbed"] == r["n_train"] - 1
        assert r["budget"]["dssim_max"] is not None
    stores = list((Path(os.environ["FACECURE_CACHE"]) / "perturbed").iterdir())
    assert any(p.name.startswith("fawkes_v03-") for p in stores)
    assert any(p.name.startswith("fawkes_v10-") for p in stores)
