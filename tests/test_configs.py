"""Every config composes and instantiates, so a typo fails here and not on the cluster."""
from pathlib import Path

import pytest
from conftest import TINY, TINY_ZOO
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from facecure.attacks import Attack
from facecure.data import build_dataset
from facecure.evaluation import FlatL2Index
from facecure.extractors import Extractor, create_extractor, list_extractors
from facecure.factory import ExtractorPool, create_attack
from facecure.loggers import RunLogger
from facecure.paths import CONF_DIR

# Overrides that keep each attack's surrogates and candidate sets tiny (the full zoo trains
# for minutes); attacks missing here need none.
ONE_SURROGATE = "attack.surrogates=[zoo_softmax]"
TINY_CANDIDATES = ["candidates.n_identities=20", "candidates.pictures_per_identity=2",
                   "candidates.image_size=32"]
SMALL_ATTACK = {
    "fawkes_v10": [ONE_SURROGATE],
    "fawkes_v03": [ONE_SURROGATE] + [f"attack.{o}" for o in TINY_CANDIDATES],
    "mixed": ["attack.first.surrogates=[zoo_softmax]", "attack.second.surrogates=[zoo_softmax]"]
    + [f"attack.first.{o}" for o in TINY_CANDIDATES],
    "fawkes_v10_modes": [f"attack.{part}.surrogates=[zoo_softmax]"
                         for part in ("first", "second.first", "second.second")],
    "lowkey": [ONE_SURROGATE, "attack.perceptual=dssim"],
    "lowkey_dssim": [ONE_SURROGATE],
    "pgd": [ONE_SURROGATE],
    "opom": [ONE_SURROGATE],
    "from_dir": ["attack.root=/tmp"],
}

GROUPS = ["data", "extractor", "attack", "defense", "index", "logger", "trainer", "paths"]


def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(compose_cfg, group):
    for option in options(group):
        folder = group == "data" and "root" in (CONF_DIR / "data" / f"{option}.yaml").read_text()
        extra = ["data.root=/tmp"] if folder else []
        cfg = compose_cfg(f"{group}={option}", *extra)
        assert cfg[group] is not None


def test_instantiate_groups(compose_cfg, tmp_path):
    cfg = compose_cfg(*TINY)
    assert isinstance(instantiate(cfg.index), FlatL2Index)
    for option in options("logger"):
        assert isinstance(instantiate(compose_cfg(f"logger={option}").logger), RunLogger)
    data = build_dataset(cfg.data, progress=False)
    assert len(data.identities) == 8
    pool = ExtractorPool(cfg, "cpu")
    assert isinstance(pool.get(), Extractor)
    generic = [o for o in TINY if not o.startswith("attack.")]
    for option in options("attack"):
        # An attack missing from SMALL_ATTACK would train the full zoo for its surrogates.
        cfg = compose_cfg(*generic, f"attack={option}", *SMALL_ATTACK.get(option, []))
        assert isinstance(create_attack(cfg.attack, pool), Attack)
    for option in options("trainer"):
        assert "accelerator" in compose_cfg(f"trainer={option}").trainer


def test_library_create_extractor_embeds_any_picture(cache_dir):
    import numpy as np
    from PIL import Image

    overrides = dict(o.split("=", 1) for o in TINY_ZOO)
    kwargs = {k.removeprefix("extractor."): v for k, v in overrides.items()}
    nested = OmegaConf.from_dotlist([f"{k}={v}" for k, v in kwargs.items()])
    ex = create_extractor("zoo_softmax", **OmegaConf.to_container(nested),
                          trainer={"enable_progress_bar": False})
    assert "zoo_softmax" in list_extractors()
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)),
                Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)),
                Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8), "RGBA"),
                rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)]
    emb = ex.embed(pictures)
    assert emb.shape == (4, ex.embedding_dim) and emb.dtype.is_floating_point
    assert Path(cache_dir, "zoo").is_dir()
    with pytest.raises(KeyError, match="unknown extractor"):
        create_extractor("no_such_model")


def test_typos_fail_with_hydra_errors(compose_cfg):
    with pytest.raises(ConfigCompositionException):
        compose_cfg("extractor=no_such_model")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("attack.mdoe=high")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("experiment=no_such_experiment")


def test_a_setting_meant_for_another_attack_is_named(compose_cfg):
    cfg = compose_cfg(*TINY, "experiment=demo", "attack=lowkey_dssim")  # demo sets Fawkes' mode
    with pytest.raises(ValueError, match="'lowkey' has no setting mode"):
        create_attack(cfg.attack, ExtractorPool(cfg, "cpu"))
