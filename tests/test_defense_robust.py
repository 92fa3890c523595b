"""defense=robust: the adaptive trainer's fine-tuned extractor, trained, cached and resumable."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, kill_at_first_checkpoint

import facecure.app
import facecure.defenses.fine_tuning as robust_mod
import facecure.defenses.robust
from facecure.app import run
from facecure.config_groups import compose_group
from facecure.data.dataset import Picture
from facecure.defenses.fine_tuning import FineTuner, PictureSet, public_groups, public_pairs
from facecure.factory import create_defense
from facecure.results import read_results

TINY_ROBUST = ["defense=robust", "defense.steps=6", "defense.checkpoint_every=3"]
# Two named attacks at once, kept tiny (one small surrogate, 2 steps, the picture's own size).
TWO_ATTACKS = ("defense.train_attacks=[{name:pgd,steps:2,image_size:null,surrogates:[zoo_softmax]},"
               "{name:fawkes_v10,steps:2,image_size:null,surrogates:[zoo_softmax]}]")


def run_context(compose_cfg, monkeypatch, tmp_path, *overrides, base=TINY):
    """The DefenseContext the app builds for `overrides` (the defense itself is not run)."""
    seen, real = [], facecure.app.create_defense

    def capture(spec):
        defense = real(spec)
        defense.run = lambda ctx: seen.append(ctx) or []
        return defense

    monkeypatch.setattr(facecure.app, "create_defense", capture)
    run(compose_cfg(*base, *overrides, f"+run_dir={tmp_path / 'ctx'}"))
    monkeypatch.undo()
    return seen[0]


def robust_extractor(ctx, **overrides):
    """The run's robust defense (its config with `overrides`) fine-tuning the run's extractor."""
    return create_defense({**ctx.cfg.defense, **overrides}).robust_extractor(ctx)


def paper_recipe(**changes) -> dict:
    """conf/defense/robust.yaml's fine-tuning settings (the paper's), with `changes`."""
    defense = create_defense(compose_group("defense", "robust"))
    return {**defense.settings, **changes}


def fine_tune(module, data, settings, path, part):
    """Fine-tune `module` on `data` into `path`'s folder, named by `path`'s stem."""
    return robust_mod.fine_tune(lambda: (module, data), settings, 0, path.parent, path.stem, {},
                                part, {"enable_progress_bar": False, "accelerator": "cpu"})


def test_robust_run_records_base_and_robust_extractor(compose_cfg, tmp_path):
    run(compose_cfg(*TINY, *TINY_ROBUST, f"+run_dir={tmp_path}"))
    written = read_results(tmp_path / "results.jsonl")
    attackers = [r for r in written if r["kind"] == "attacker"]
    assert len(attackers) == 8  # 2 systems x (clean baseline, fawkes_v10) x 2 attackers
    assert {r["defense"] for r in attackers} == {"none", "robust"}
    assert all(0 <= r[k] <= 1 for r in attackers for k in ("protection_rate", "clean_accuracy"))
    aggregates = [r for r in written if r["kind"] == "aggregate"]
    robust = [a for a in aggregates if a["defense"] == "robust"]
    assert {a["attack"] for a in robust} == {"none", "fawkes_v10"}
    assert all(a["robust_extractor"] == a["extractor"] == "zoo_softmax+robust" for a in robust)
    assert all(a["n_attackers"] == 2 for a in aggregates)
    assert all(r["n_public"] == 4 for r in attackers)
    fingerprints = {d: {r["extractor_fingerprint"] for r in attackers if r["defense"] == d}
                    for d in ("none", "robust")}
    assert all(len(f) == 1 for f in fingerprints.values())
    assert fingerprints["none"] != fingerprints["robust"]


def test_robust_training_lowers_the_training_loss(compose_cfg, monkeypatch, tmp_path):
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, *TINY_ROBUST)
    data = PictureSet(public_groups(ctx, [ctx.attack]), ctx.extractor.input_size)
    assert len(data) == 2 * len(ctx.public_pictures())  # clean + one perturbed twin each
    module = FineTuner(robust_mod.trainable_copy(ctx.extractor, "robust"), len(data.classes))
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor(data.labels)

    def loss():  # on the whole training set, BatchNorm on batch statistics as in training
        module.train()
        with torch.no_grad():
            return F.cross_entropy(module.logits(x), y).item()

    before = loss()
    settings = paper_recipe(steps=30, checkpoint_every=30)
    fine_tune(module, data, settings, tmp_path / "m", module)
    assert loss() < before - 0.2
    assert list(tmp_path.glob("m-*.pt")) and not list(tmp_path.glob("m-*.work"))


def test_freeze_bn_keeps_the_pretrained_batchnorm_statistics(compose_cfg, monkeypatch, tmp_path):
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, *TINY_ROBUST)
    data = PictureSet(public_groups(ctx, [ctx.attack]), ctx.extractor.input_size)
    settings = paper_recipe(steps=4, checkpoint_every=4)
    stats = {}
    for freeze in (False, True):
        module = FineTuner(robust_mod.trainable_copy(ctx.extractor, "robust"), len(data.classes),
                           freeze_bn=freeze)
        fine_tune(module, data, settings, tmp_path / f"{freeze}", module)
        stats[freeze] = {k: v for k, v in module.extractor.state_dict().items() if "running_" in k}
    before = {k: v for k, v in ctx.extractor.state_dict().items() if "running_" in k}
    assert stats[True].keys() == before.keys() and before
    assert all(torch.equal(stats[True][k], before[k]) for k in before)
    assert not all(torch.equal(stats[False][k], before[k]) for k in before)
    # the cache fingerprint names freeze_bn only when it is set (older caches stay valid)
    assert "freeze_bn" not in robust_mod.recipe_of(settings)
    assert robust_mod.recipe_of({**settings, "freeze_bn": True})["freeze_bn"] is True


def test_public_pairs_give_each_twin_its_clean_source(compose_cfg, monkeypatch, tmp_path):
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, *TINY_ROBUST)
    groups, sources = public_pairs(ctx, [ctx.attack])
    clean = {p.key for p in ctx.public_pictures()}
    twins = [p for pics in groups.values() for p in pics if p.key not in clean]
    assert twins and {p.key for p in twins} == set(sources)
    assert all(sources[t.key].identity == t.identity and sources[t.key].name == t.name
               and sources[t.key].key in clean for t in twins)
    data = PictureSet(groups, ctx.extractor.input_size, sources)
    for i, p in enumerate(data.pictures):
        x, label, source, is_twin = data[i]
        assert is_twin == (p.key in sources)
        expected = robust_mod.resized(sources[p.key] if is_twin else p, ctx.extractor.input_size)
        torch.testing.assert_close(source, expected)


def test_invariance_terms_train_without_labels_and_keep_the_teacher_fixed(
        compose_cfg, monkeypatch, tmp_path):
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, *TINY_ROBUST)
    # Twins far from their sources (the tiny test attack barely moves an embedding): noise.
    rng = np.random.default_rng(0)
    groups, sources = {}, {}
    for p in ctx.public_pictures():
        noisy = np.clip(p.load() + rng.normal(0, 60, p.load().shape), 0, 255).astype(np.uint8)
        twin = Picture.from_pixels(p.identity, p.name, noisy)
        groups.setdefault(p.identity, []).extend([p, twin])
        sources[twin.key] = p
    data = PictureSet(groups, ctx.extractor.input_size, sources)
    module = FineTuner(robust_mod.trainable_copy(ctx.extractor, "robust"), len(data.classes),
                       ce_weight=0.0, distill_weight=1.0, pair_weight=1.0)
    teacher = module._teacher[0]
    assert not any(k.startswith("_teacher") for k in module.state_dict())  # not checkpointed
    twins = [i for i, p in enumerate(data.pictures) if p.key in sources]
    x, source = (torch.stack([data[i][k] for i in twins]) for k in (0, 2))

    def invariance():  # mean 1 - cosine of twin and source, BatchNorm on batch statistics
        module.train()  # (the tiny 1-epoch zoo model's running statistics flatten everything)
        with torch.no_grad():
            both = module.embedding(module.extractor, torch.cat([x, source]))
            return (1 - (both[:len(x)] * both[len(x):]).sum(1)).mean().item()

    before, teacher_state = invariance(), copy.deepcopy(teacher.state_dict())
    settings = paper_recipe(steps=30, checkpoint_every=30)
    fine_tune(module, data, settings, tmp_path / "m", module.extractor)
    assert invariance() < before
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())
    assert not teacher.training
    recipe = robust_mod.recipe_of({**settings, "ce_weight": 0.0, "distill_weight": 1.0})
    assert recipe["ce_weight"] == 0.0 and recipe["distill_weight"] == 1.0
    assert "pair_weight" not in recipe and "ce_weight" not in robust_mod.recipe_of(settings)


def test_robust_invariant_defense_names_its_extractor(compose_cfg, tmp_path):
    run(compose_cfg(*TINY, "defense=robust_invariant", "defense.steps=4",
                    "defense.checkpoint_every=2", f"+run_dir={tmp_path}"))
    robust = [r for r in read_results(tmp_path / "results.jsonl")
              if r["kind"] == "aggregate" and r["defense"] == "robust"]
    assert robust and all(r["extractor"] == "zoo_softmax+robust_invariant" for r in robust)


def test_robust_extractor_is_cached_and_loaded_not_retrained(compose_cfg, monkeypatch, tmp_path):
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, *TINY_ROBUST, TWO_ATTACKS)
    first = robust_extractor(ctx)
    assert first.name == "zoo_softmax+robust" and first.fingerprint.startswith(first.name)
    assert (ctx.cache_dir / f"{first.fingerprint}.pt").exists()
    assert len(list(ctx.perturbed.root.glob("pgd-*"))) == 1  # the named attacks ran on public users
    own_attack = robust_extractor(ctx, train_attacks=None)
    assert own_attack.fingerprint != first.fingerprint  # the train attacks are in the recipe

    def no_training(*args, **kwargs):
        raise AssertionError("a cached robust extractor was trained again")

    monkeypatch.setattr(robust_mod, "fit_resumable", no_training)
    again = robust_extractor(ctx)
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(again(x), first(x))
    assert not torch.allclose(ctx.extractor(x), first(x))  # fine-tuning changed the extractor


def test_non_differentiable_extractor_is_refused(compose_cfg, monkeypatch, tmp_path):
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, *TINY_ROBUST)
    ctx.extractor.differentiable = False
    try:
        with pytest.raises(ValueError, match="not differentiable"):
            robust_extractor(ctx)
    finally:
        ctx.extractor.differentiable = True


def test_killed_robust_training_resumes(compose_cfg, tmp_path, cache_dir, caplog):
    overrides = [*TINY, "defense=robust", "defense.steps=150", "defense.checkpoint_every=10"]
    code = ("import json, sys; from hydra import compose, initialize_config_dir; "
            "from facecure.paths import CONF_DIR; from facecure.app import run\n"
            "with initialize_config_dir(config_dir=str(CONF_DIR), version_base='1.3'):\n"
            "    cfg = compose('config', overrides=json.loads(sys.argv[1]))\n"
            "run(cfg)")
    proc = subprocess.Popen([sys.executable, "-c", code,
                             json.dumps(overrides + [f"+run_dir={tmp_path / 'killed'}"])])
    work = cache_dir / "defenses"
    kill_at_first_checkpoint(proc, work, "*+robust-*.work/last.ckpt")
    before = set(work.glob("*+robust-*.pt"))
    with caplog.at_level("INFO", logger="facecure.extractors.training"):
        run(compose_cfg(*overrides, f"+run_dir={tmp_path / 'resumed'}"))
    assert "resuming training" in caplog.text
    assert len(set(work.glob("*+robust-*.pt")) - before) == 1
    assert not list(work.glob("*+robust-*.work"))
    resumed = read_results(tmp_path / "resumed" / "results.jsonl")
    assert any(r["defense"] == "robust" for r in resumed)


def test_validation_users_are_held_out_of_the_fine_tune_and_scored(compose_cfg, monkeypatch,
                                                                   tmp_path):
    trained_on = []
    real_fine_tune = facecure.defenses.robust.fine_tune

    def seen(prepare):
        module, data = prepare()
        trained_on.append(set(data.classes))
        return module, data

    monkeypatch.setattr(facecure.defenses.robust, "fine_tune",
                        lambda prepare, *a: real_fine_tune(lambda: seen(prepare), *a))
    stand_in = ("defense.train_attacks=[{name:lowkey_dssim,steps:2,image_size:null,"
                "surrogates:[zoo_softmax]}]")
    run(compose_cfg(*TINY, *TINY_ROBUST, stand_in, "defense.validation_users=2",
                    f"+run_dir={tmp_path}"))
    written = read_results(tmp_path / "results.jsonl")
    validation = [r for r in written if r["kind"] == "validation"]
    assert {(r["defense"], r["validation_attack"]) for r in validation} == {  # the config's label
        ("none", "lowkey (DSSIM stand-in)"), ("robust", "lowkey (DSSIM stand-in)")}
    held_out = set(validation[0]["validation_users"])
    attackers = {r["attacker"] for r in written if r["kind"] == "attacker"}
    assert len(held_out) == 2 and not held_out & attackers  # public users, never attackers
    assert len(trained_on) == 1 and len(trained_on[0]) == 2 and not held_out & trained_on[0]
    for r in validation:
        assert 0 <= r["protection_rate"] <= 1 and 0 <= r["clean_error"] <= 1
        assert r["gap"] == pytest.approx(r["protection_rate"] - r["clean_error"])
    robust = next(r for r in validation if r["defense"] == "robust")
    assert robust["extractor"] == "zoo_softmax+robust"


def test_validation_users_enter_the_recipe_only_when_set(compose_cfg, monkeypatch, tmp_path):
    recipe_of = robust_mod.recipe_of
    assert "validation_users" not in recipe_of(paper_recipe())  # cached models keep their keys
    assert recipe_of(paper_recipe(validation_users=3))["validation_users"] == 3
    ctx = run_context(compose_cfg, monkeypatch, tmp_path, *TINY_ROBUST)
    with pytest.raises(ValueError, match="validation_users=4"):
        robust_extractor(ctx, validation_users=4)  # 4 public users
