"""Every experiment config composes, with every job of its sweep."""
import itertools

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from facecure.paths import PROJECT_ROOT

EXPERIMENTS = sorted(p.stem for p in (PROJECT_ROOT / "experiments").glob("*.yaml"))


def sweep_jobs(name: str, world: str = "embedded") -> list[list[str]]:
    """The override lists of the sweep an experiment declares (hydra.sweeper.params), in a
    world (the sweeps name the world's models: extractor=${world.eras})."""
    from facecure.paths import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}", f"world={world}"],
                      return_hydra_config=True)
        params = {k: str(v) for k, v in (cfg.hydra.sweeper.params or {}).items()}
    GlobalHydra.instance().clear()
    axes = [[f"{k}={v}" for v in values.split(",")] for k, values in params.items()]
    return [list(job) for job in itertools.product(*axes)]


def test_every_paper_experiment_has_a_config():
    for name in ("baseline", "adaptive", "detection", "oblivious", "clip_finetune", "combined",
                 "unprotected", "classifiers", "transfer_time", "pubfig"):
        assert name in EXPERIMENTS


EMBEDDED_ONLY = ("demo", "pubfig")  # rendered data of their own


@pytest.mark.parametrize("name,world", [(e, w) for w in ("embedded", "real") for e in EXPERIMENTS
                                        if w == "embedded" or e not in EMBEDDED_ONLY])
def test_experiment_and_its_sweep_compose(name, world, cache_dir):
    from facecure.paths import CONF_DIR

    jobs = sweep_jobs(name, world)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for job in jobs:
            cfg = compose("config", overrides=[f"experiment={name}", f"world={world}", *job],
                          return_hydra_config=True)
            choices = cfg.hydra.runtime.choices
            assert cfg.experiment_name == name and cfg.world.name == world
            if world == "real" and "extractor=" not in " ".join(job):  # the role's real model
                assert cfg.extractor.name in {*cfg.world.roles.values(), "clip"}
            # every interpolation of the job's own config resolves
            OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
            for override in job:
                key, value = override.split("=")
                got = choices[key] if key in choices else OmegaConf.select(cfg, key)
                if OmegaConf.is_list(got):  # a list override: attack.surrogates=[dlib]
                    got = "[" + ",".join(map(str, got)) + "]"
                assert str(got).lower() == value.lower()
    GlobalHydra.instance().clear()


# Per experiment: what shrinks its first sweep job to seconds (tiny zoo, data, attack, defense).
TINY_ATTACKS = {
    "fawkes_v03": ["attack.steps=3", "attack.image_size=null", "attack.surrogates=[zoo_softmax]",
                   "attack.candidates.n_identities=20", "attack.candidates.pictures_per_identity=2",
                   "attack.candidates.image_size=32"],
    "fawkes_v10": ["attack.steps=3", "attack.image_size=null", "attack.surrogates=[zoo_softmax]"],
    "lowkey_dssim": ["attack.steps=3", "attack.image_size=null", "attack.surrogates=[zoo_softmax]"],
    "pgd": ["attack.steps=3", "attack.image_size=null", "attack.surrogates=[zoo_softmax]"],
    "opom": ["attack.steps=3", "attack.image_size=null", "attack.surrogates=[zoo_softmax]"],
}
TINY_DEFENSES = {
    "robust": ["defense.steps=4", "defense.checkpoint_every=2",
               "defense.train_attacks=[{name:fawkes_v10,steps:2,image_size:null,surrogates:[zoo_softmax]}]"],
    "detector": ["defense.model_name=mobilenetv2_035", "defense.epochs=1", "defense.input_size=32",
                 "defense.train_attacks=[{name:fawkes_v10,steps:2,image_size:null,surrogates:[zoo_softmax]}]",
                 "defense.test_attacks=null"],
    "clip_finetune": ["defense.epochs=1", "defense.alphas=[0,1]"],
    "combined": ["defense.robust=zoo_softmax", "defense.systems=[top2,threshold]"],
    "linear": [],
    "end_to_end": ["defense.steps=4", "defense.checkpoint_every=2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e != "demo"])
def test_a_tiny_version_of_every_experiment_runs(name, compose_cfg, tmp_path):
    from conftest import TINY_DATA, TINY_ZOO
    from test_defense_clip import overrides
    from test_zoo import TINY_CLIP

    from facecure.app import run

    job = sweep_jobs(name)[0]
    cfg = compose_cfg(f"experiment={name}", *job)
    extractor = cfg.extractor.name
    tiny = (["extractor=zoo_softmax"] if extractor not in ("zoo_softmax", "zoo_clip") else [])
    tiny += [f"extractor.{o.split('.', 1)[1]}" for o in overrides(TINY_CLIP)] if extractor == "zoo_clip" else TINY_ZOO
    attack = next((o.split("=")[1] for o in job if o.startswith("attack=")), cfg.attack.name)
    if attack == "mixed":
        attack = "fawkes_v10"
    tiny += [f"attack={attack}", *TINY_ATTACKS[attack]]
    if extractor == "zoo_clip":
        tiny = [o.replace("surrogates=[zoo_softmax]", "surrogates=[zoo_clip]") for o in tiny]
    tiny += TINY_DEFENSES.get(cfg.defense.name, [])
    data = ["data.n_identities=12" if o.startswith("data.n_identities") else o for o in TINY_DATA]
    cfg = compose_cfg(f"experiment={name}", *[o for o in job if not o.startswith(("attack=", "extractor="))],
                      *tiny, *data, "n_attackers=2", "progress=false",
                      "trainer.enable_progress_bar=false", f"+run_dir={tmp_path}")
    records = run(cfg)
    assert records and all(r["experiment"] == name for r in records)
    rows = [r for r in records if r["kind"] in ("aggregate", "detector")]
    assert rows and all(0 <= r.get("protection_rate_mean", r.get("auc", 0)) <= 1 for r in rows)
