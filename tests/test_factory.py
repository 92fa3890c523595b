"""One way to build each thing: the factory, defenses as classes, one cached fit, loud configs."""
import ast
import os
import subprocess
import sys

import pytest
from conftest import TINY, TINY_DATA, TINY_ZOO

from facecure.app import run
from facecure.attacks import MixedAttack, RandomNoise
from facecure.config_groups import compose_group
from facecure.defenses import NoDefense
from facecure.factory import ExtractorPool, create_attack, create_defense
from facecure.paths import CONF_DIR, PROJECT_ROOT
from facecure.report.groups import group_attackers
from facecure.results import ATTACKER_VALUES, read_results
from facecure.utils.cached_fit import DEFAULT_NUMERICS, cached_fit, fit_key, trainer_numerics
from facecure.utils.io import fingerprint

PACKAGE = PROJECT_ROOT / "facecure"
# The Hydra command and the run it calls; the audit's commands and the runs they call.
ENTRY_POINTS = {"cli.py", "app.py", "audit/cli.py", "audit/run.py", "audit/protect.py"}
OWN_PROTECTION = PROJECT_ROOT / "examples" / "own_protection"
OWN_DEFENSE = PROJECT_ROOT / "examples" / "own_defense"


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_nothing_below_the_entry_points_imports_the_app_or_the_factory():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ENTRY_POINTS or rel == "factory.py":
            continue
        bad = [m for m in imported_modules(path) if m in ("facecure.app", "facecure.factory")]
        if bad:
            offenders[rel] = bad
    assert not offenders, offenders
    assert "facecure.factory" in set(imported_modules(PACKAGE / "app.py"))


def test_every_defense_config_builds_its_class_and_none_is_a_class_too():
    for path in sorted((CONF_DIR / "defense").glob("*.yaml")):
        defense = create_defense(compose_group("defense", path.stem))
        assert type(defense).__module__.startswith("facecure.defenses"), path.stem
        assert 0 <= defense.public_fraction < 1
    assert isinstance(create_defense(None), NoDefense)
    assert isinstance(create_defense(compose_group("defense", "none")), NoDefense)


def test_a_defense_setting_typo_is_named_with_what_the_defense_takes():
    node = {**compose_group("defense", "robust"), "stpes": 10}
    with pytest.raises(ValueError, match=r"defense 'robust' has no setting stpes.*it takes"):
        create_defense(node)


def test_a_typo_in_the_detectors_settings_fails_the_combined_run(compose_cfg, tmp_path):
    cfg = compose_cfg(*TINY, "defense=combined", "defense.detector={n_train_user: 3}",
                      f"+run_dir={tmp_path}")
    with pytest.raises(ValueError, match="defense 'detector' has no setting n_train_user"):
        run(cfg)
    assert not (tmp_path / "results.jsonl").exists()


def test_a_users_own_attack_nests_in_mixed(compose_cfg, monkeypatch):
    monkeypatch.syspath_prepend(str(OWN_PROTECTION))
    cfg = compose_cfg(*TINY_ZOO, *TINY_DATA, f"hydra.searchpath=[file://{OWN_PROTECTION / 'conf'}]",
                      "attack=blur_half")
    attack = create_attack(cfg.attack, ExtractorPool(cfg, "cpu"))
    assert isinstance(attack, MixedAttack) and isinstance(attack.second, RandomNoise)
    assert type(attack.first).__name__ == "Blur" and attack.first.sigma == 1.0


def test_a_defense_kept_in_its_own_folder_runs(tmp_path, cache_dir):
    """examples/own_defense: one file and one config outside FaceCure's package and conf/,
    found through PYTHONPATH and hydra.searchpath; its label makes a report row of its own."""
    out = tmp_path / "run"
    env = {**os.environ, "FACECURE_CACHE": str(cache_dir), "PYTHONPATH": str(OWN_DEFENSE)}
    cmd = [sys.executable, "-m", "facecure.cli", f"hydra.searchpath=[file://{OWN_DEFENSE / 'conf'}]",
           *TINY, "defense=squeeze", "defense.bits=3", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_results(out / "results.jsonl")
    squeezed = [r for r in records if r["kind"] == "aggregate" and r["defense"] == "squeeze"]
    assert {r["attack"] for r in squeezed} == {"none", "fawkes_v10"}
    assert all(r["bits"] == 3 and "bits" in r["labels"] for r in squeezed)
    assert all(r["extractor"] == "zoo_softmax+squeeze3" for r in squeezed)
    rows = group_attackers([r for r in records if r["kind"] == "attacker"])
    assert {(g["defense"], g["attack"]) for g in rows} == {
        ("none", "none"), ("none", "fawkes_v10"), ("squeeze", "none"), ("squeeze", "fawkes_v10")}


def test_aggregates_carry_every_label_their_attackers_share(compose_cfg, tmp_path):
    run(compose_cfg(*TINY, "defense=robust", "defense.steps=2", "defense.checkpoint_every=2",
                    f"+run_dir={tmp_path}"))
    records = read_results(tmp_path / "results.jsonl")
    for agg in (r for r in records if r["kind"] == "aggregate"):
        members = [r for r in records if r["kind"] == "attacker" and r["attack"] == agg["attack"]
                   and r["extractor_fingerprint"] == agg["extractor_fingerprint"]]
        shared = {k for k in members[0] if all(m.get(k) == members[0][k] for m in members)}
        labels = shared - set(ATTACKER_VALUES)  # what is measured per attacker is no label
        assert all(agg[k] == members[0][k] for k in labels), agg
        assert {"robust_extractor", "n_public", "config_fingerprint"} <= set(agg) or \
            agg["defense"] == "none"


def test_a_gpu_fit_and_a_default_fit_get_different_cache_keys(compose_cfg, tmp_path):
    default = compose_cfg().trainer
    gpu = compose_cfg("trainer=gpu").trainer
    as_dict = {k: v for k, v in default.items()}
    key = {"recipe": 1}
    # The default (fp32 on this CPU) keeps the key every model had before: caches load.
    assert trainer_numerics(as_dict) == DEFAULT_NUMERICS
    assert fit_key(key, as_dict) == key and fit_key(key, {"enable_progress_bar": True}) == key
    assert fingerprint(fit_key(key, dict(gpu))) != fingerprint(fit_key(key, as_dict))
    assert trainer_numerics(dict(gpu))["precision"] == "16-mixed"
    assert fit_key(key, {**as_dict, "precision": "bf16-mixed"}) != key
    # A fit under each is trained and stored apart: the gpu run is not skipped as done.
    fits = []

    def fit(work):
        fits.append(work)

    first = cached_fit(tmp_path, "m", key, fit, lambda: {"n": len(fits)}, as_dict)
    again = cached_fit(tmp_path, "m", key, fit, lambda: {"n": len(fits)}, as_dict)
    other = cached_fit(tmp_path, "m", key, fit, lambda: {"n": len(fits)}, dict(gpu))
    assert len(fits) == 2 and first.path == again.path != other.path
    assert first.fingerprint == fingerprint(key) and other.state == {"n": 2}


def test_the_zoo_key_covers_the_trainer_numerics(cache_dir):
    from facecure.extractors import create_extractor

    overrides = dict(o.split("=", 1) for o in TINY_ZOO)
    kwargs = {k.removeprefix("extractor."): v for k, v in overrides.items()}
    from omegaconf import OmegaConf
    nested = OmegaConf.to_container(OmegaConf.from_dotlist([f"{k}={v}" for k, v in kwargs.items()]))
    fp32 = create_extractor("zoo_softmax", **nested, trainer={"enable_progress_bar": False})
    det = create_extractor("zoo_softmax", **nested,
                           trainer={"enable_progress_bar": False, "deterministic": True})
    assert fp32.fingerprint != det.fingerprint
    assert fp32.fingerprint.startswith("zoo_softmax-")


def test_metric_keys_name_the_defense_and_the_model():
    from facecure.app import RUN_LABELS, metric_prefix

    base = {"defense": "none", "extractor": "zoo_softmax", "attack": "fawkes_v10",
            "labels": list(RUN_LABELS)}
    robust = {**base, "defense": "robust", "extractor": "zoo_softmax+robust",
              "robust_extractor": "zoo_softmax+robust", "labels": [*RUN_LABELS, "robust_extractor"]}
    wiseft = [{**base, "defense": "clip_finetune", "extractor": "zoo_clip", "alpha": a,
               "labels": [*RUN_LABELS, "alpha"]} for a in (0.0, 0.6)]
    keys = [metric_prefix(r) for r in (base, robust, *wiseft)]
    assert keys[0] == "eval/none/zoo_softmax/fawkes_v10"
    assert keys[1] == "eval/robust/zoo_softmax+robust/fawkes_v10"
    assert keys[3] == "eval/clip_finetune/zoo_clip/fawkes_v10/alpha=0.6"
    assert len(set(keys)) == len(keys)


def test_nested_objects_keep_hydras_own_keys(compose_cfg):
    """`_args_` (and `_partial_`) mean in a nested object what they mean to Hydra."""
    spec = {"_target_": "builtins.dict", "name": "probe",
            "largest": {"_target_": "builtins.max", "_args_": [1, 3]},
            "later": {"_target_": "builtins.min", "_partial_": True}}
    built = create_attack(spec, ExtractorPool(compose_cfg(*TINY), "cpu"))
    assert built["largest"] == 3 and built["later"](4, 2) == 2
