"""defense=detector: the clean-vs-perturbed classifier, its init, training, resume and records."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, kill_at_first_checkpoint
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from facecure.app import run
from facecure.defenses.detection_metrics import changed_scores, detection_metrics, unchanged_twins
from facecure.defenses.detector import choose_users, perturbed_probability
from facecure.defenses.detector_model import (
    DetectorModule,
    build_detector,
    load_or_train,
    training_settings,
)
from facecure.extractors.adapters.weights import IncompatibleWeightsError
from facecure.paths import PROJECT_ROOT
from facecure.results import read_results

# Read at collection, before a fixture points FACECURE_CACHE at a private folder.
LPIPS_ALEXNET = (Path(__import__("os").environ.get("FACECURE_CACHE") or PROJECT_ROOT / ".cache")
                 / "weights" / "lpips" / "alexnet.pth")

TINY_MODEL = "mobilenetv2_035"
TINY_DETECTOR = ["defense=detector", f"defense.model_name={TINY_MODEL}", "defense.epochs=1",
                 "defense.batch_size=8", "defense.input_size=32"]
# A second attack for the transfer table, small like TINY's: Fawkes v1.0 low on the tiny zoo.
LOW = "{name:fawkes_v10,mode:low,steps:2,image_size:null,surrogates:[zoo_softmax]}"
SETTINGS = {"model_name": TINY_MODEL, "weights": None, "input_size": 32, "epochs": 1,
            "lr": 1e-3, "batch_size": 8, "seed": 0}


def toy_pictures(n=24, seed=0):
    """Smooth clean pictures and twins with a strong +-noise: an easy detection task."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=32,
                                            mode="bilinear") * 200 + 20
    noise = (torch.rand(n, 3, 32, 32, generator=g) < 0.5).float() * 60 - 30
    return clean.round().byte(), (clean + noise).clamp(0, 255).round().byte()


def test_tiny_run_writes_one_detector_record_per_attack_pair(compose_cfg, tmp_path):
    cfg = compose_cfg(*TINY, *TINY_DETECTOR, f"+run_dir={tmp_path}",
                      f"defense.train_attacks=[{LOW}]",
                      f"defense.test_attacks=[{LOW},{LOW.replace('low', 'mid')}]")
    run(cfg)
    records = [r for r in read_results(tmp_path / "results.jsonl") if r["kind"] == "detector"]
    assert [(r["train_attack"], r["test_attack"]) for r in records] == [
        ("fawkes_v10/low", "fawkes_v10/low"), ("fawkes_v10/low", "fawkes_v10/mid")]
    for r in records:
        assert all(0 <= r[k] <= 1 for k in ("accuracy", "precision", "recall", "auc",
                                            "unchanged_share"))
        # 8 identities, half public: 4 public users split 25:20 -> 2 train, 2 test
        assert (r["n_train_users"], r["n_test_users"]) == (2, 2)
        assert r["n_test_pictures"] == 2 * 2 * 5 and r["defense"] == "detector"
        assert r["init"] == "scratch"  # no ImageNet file for mobilenetv2_035 in this checkout
        assert (r["epochs"], r["lr"]) == (1, 1e-3)  # as set: the scratch recipe fills only nulls


def test_the_papers_fawkes_detector_trains_on_all_modes_and_is_scored_on_each(compose_cfg, tmp_path):
    part = "{steps:2,image_size:null,surrogates:[zoo_softmax]}"
    modes = f"{{name:fawkes_v10_modes,first:{part},second:{{first:{part},second:{part}}}}}"
    cfg = compose_cfg(*TINY, *TINY_DETECTOR, f"+run_dir={tmp_path}",
                      f"defense.train_attacks=[{modes}]", f"defense.test_attacks=[{LOW}]")
    run(cfg)
    [r] = [r for r in read_results(tmp_path / "results.jsonl") if r["kind"] == "detector"]
    assert (r["train_attack"], r["test_attack"]) == ("fawkes_v10/low+mid+high", "fawkes_v10/low")
    # three plain parts, one of them the very attack it is scored on (same store fingerprint)
    assert len(set(r["train_part_fingerprints"])) == 3
    assert r["test_attack_fingerprint"] in r["train_part_fingerprints"]
    assert r["train_attack_fingerprint"] not in r["train_part_fingerprints"]


def test_epochs_and_lr_come_from_the_recipe_of_the_initialisation(tmp_path):
    recipes = {"imagenet": {"epochs": 3, "lr": 5e-5}, "scratch": {"epochs": 30, "lr": 1e-3}}
    settings = {**SETTINGS, "epochs": None, "lr": None, "recipes": recipes}
    assert (training_settings(settings)["epochs"], training_settings(settings)["lr"]) == (30, 1e-3)
    weights = tmp_path / "mobilenet.safetensors"
    weights.write_bytes(b"not read here")
    imagenet = training_settings({**settings, "weights": str(weights)})
    assert (imagenet["epochs"], imagenet["lr"]) == (3, 5e-5)
    assert training_settings({**settings, "epochs": 2})["epochs"] == 2  # set: kept
    with pytest.raises(ValueError, match="defense.epochs is null"):
        training_settings({**settings, "recipes": None})


def test_run_attack_is_the_default_and_the_detector_is_cached(compose_cfg, tmp_path, cache_dir):
    cfg = compose_cfg(*TINY, *TINY_DETECTOR, f"+run_dir={tmp_path / 'a'}")
    (first,) = [r for r in run(cfg) if r["kind"] == "detector"]
    assert first["train_attack"] == first["test_attack"] == "fawkes_v10/high"
    trained = sorted((cache_dir / "defenses" / "detector").glob("*.pt"))
    assert trained and not list((cache_dir / "defenses" / "detector").glob("*.work"))
    mtimes = [p.stat().st_mtime for p in trained]
    (again,) = [r for r in run(compose_cfg(*TINY, *TINY_DETECTOR, f"+run_dir={tmp_path / 'b'}"))
                if r["kind"] == "detector"]
    assert [p.stat().st_mtime for p in trained] == mtimes  # loaded, not trained again
    assert {k: again[k] for k in ("accuracy", "auc")} == {k: first[k] for k in ("accuracy", "auc")}


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_imagenet_init_from_a_local_timm_file(tmp_path, suffix):
    import timm

    source = timm.create_model(TINY_MODEL, pretrained=False)  # ImageNet-shaped: 1000 classes
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    detector = build_detector({**SETTINGS, "weights": str(path)})
    assert detector.init == "imagenet"
    torch.testing.assert_close(detector.model.conv_stem.weight, source.conv_stem.weight)
    assert detector.model.classifier.out_features == 1  # a new head, one logit


def test_missing_weights_train_from_scratch_and_wrong_ones_fail(tmp_path):
    assert build_detector({**SETTINGS, "weights": str(tmp_path / "absent.bin")}).init == "scratch"
    import timm
    torch.save(timm.create_model("mobilenetv2_050", pretrained=False).state_dict(),
               tmp_path / "other.bin")
    with pytest.raises(IncompatibleWeightsError, match="shape mismatches"):
        build_detector({**SETTINGS, "weights": str(tmp_path / "other.bin")})


def test_training_lowers_the_loss_and_separates_the_pictures():
    torch.manual_seed(0)
    clean, perturbed = toy_pictures()
    x, y = torch.cat([clean, perturbed]), torch.cat([torch.zeros(len(clean)), torch.ones(len(perturbed))])
    losses = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    detector = build_detector(SETTINGS)
    Trainer(max_steps=60, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[Record()], accelerator="cpu").fit(
        DetectorModule(detector, lr=1e-3),
        DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, drop_last=True))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
    p = perturbed_probability(detector, [a.permute(1, 2, 0).numpy() for a in x])
    assert p.shape == (len(x),) and ((0 <= p) & (p <= 1)).all()
    assert detection_metrics(p, y.numpy())["auc"] > 0.9


def test_twins_the_attack_left_unchanged_are_counted_and_scored_apart():
    clean = torch.full((4, 3, 8, 8), 100, dtype=torch.uint8)
    perturbed = clean.clone()
    perturbed[1, 0, 0, 0] += 2     # within 2/255 everywhere: unchanged
    perturbed[2, 1, 3, 3] += 3     # one pixel 3/255 off: changed
    perturbed[3] += 8
    unchanged = unchanged_twins(clean, perturbed, tolerance=2)
    assert unchanged.tolist() == [True, True, False, False]
    # Clean pictures score 0.2 and 0.4..., changed twins are found; unchanged ones look clean.
    p = np.array([0.2, 0.4, 0.3, 0.1, 0.1, 0.3, 0.9, 0.8])
    labels = np.r_[np.zeros(4), np.ones(4)]
    scores = changed_scores(p, labels, unchanged, threshold=0.5)
    assert scores == pytest.approx({"unchanged_share": 0.5, "recall_changed": 1.0,
                                    "auc_changed": 1.0})
    assert detection_metrics(p, labels)["auc"] < 0.8  # all twins: the no-ops pull AUC down
    assert changed_scores(p, labels, np.ones(4, bool), 0.5) == {"unchanged_share": 1.0}


def test_metrics_and_user_choice():
    scores = detection_metrics(np.array([0.1, 0.6, 0.4, 0.9]), np.array([0, 0, 1, 1]))
    assert scores == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "auc": 0.75})
    train, test = choose_users([f"u{i}" for i in range(60)], 25, 20, seed=0)
    assert (len(train), len(test)) == (25, 20) and not set(train) & set(test)
    assert choose_users([f"u{i}" for i in range(60)], 25, 20, seed=0) == (train, test)
    train, test = choose_users([f"u{i}" for i in range(9)], 25, 20, seed=0)
    assert (len(train), len(test)) == (5, 4)  # 9 * 25/45 = 5
    with pytest.raises(ValueError, match="at least 2 public users"):
        choose_users(["u0"], 25, 20, seed=0)


def test_killed_detector_training_resumes_from_its_last_epoch(tmp_path, caplog):
    settings = {**SETTINGS, "epochs": 15, "lr": 5e-5}
    trainer = {"enable_progress_bar": False, "accelerator": "cpu"}
    code = ("import json, sys; from test_defense_detector import toy_pictures; "
            "from facecure.defenses.detector_model import load_or_train; "
            "load_or_train(json.loads(sys.argv[2]), {'test': 1}, toy_pictures, sys.argv[1], "
            "json.loads(sys.argv[3]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), json.dumps(settings),
                             json.dumps(trainer)], cwd=Path(__file__).parent)
    work = tmp_path / "detector"
    kill_at_first_checkpoint(proc, work)
    assert not list(work.glob("*.pt"))
    with caplog.at_level("INFO", logger="facecure.extractors.training"):
        detector = load_or_train(settings, {"test": 1}, toy_pictures, tmp_path, trainer)
    assert "resuming training" in caplog.text
    assert len(list(work.glob("*.pt"))) == 1 and not list(work.glob("*.work"))
    clean, perturbed = toy_pictures()
    assert perturbed_probability(detector, [a.permute(1, 2, 0).numpy() for a in clean]).shape == (24,)


def test_input_size_is_the_attacks_but_at_least_the_minimum():
    from types import SimpleNamespace

    from facecure.defenses.detector import input_size_of

    at64, at224 = SimpleNamespace(image_size=64), SimpleNamespace(image_size=224)
    assert input_size_of({"input_size": None, "min_input_size": 128}, at64, []) == 128
    assert input_size_of({"input_size": None, "min_input_size": 128}, at224, []) == 224
    assert input_size_of({"input_size": 32, "min_input_size": 128}, at224, []) == 32  # as set


def test_detector_from_the_imagenet_alexnet_trunk_on_this_machine(tmp_path):
    """defense=detector_alexnet: LPIPS' ImageNet AlexNet (make weights-lpips) as the trunk;
    the cache key follows the weights' content, and a missing file trains from scratch."""
    from facecure.defenses.detector_model import build_detector, recipe

    weights = LPIPS_ALEXNET
    if not weights.is_file():
        pytest.skip(f"{weights} missing: make weights-lpips converts it")
    settings = {"model_name": "tv_alexnet", "weights": str(weights), "input_size": 128,
                "epochs": 1, "lr": 1e-4, "batch_size": 4, "seed": 0}
    detector = build_detector(settings)
    assert detector.init == "imagenet"
    assert torch.equal(detector(torch.rand(3, 3, 64, 64)), torch.zeros(3))  # zero head: p = 0.5
    scratch = {**settings, "weights": str(tmp_path / "absent.pth")}
    assert build_detector(scratch).init == "scratch"
    assert recipe(settings)["init"] != recipe(scratch)["init"]
