"""Shared fixtures: a private cache per test session, tiny configs, CPU only."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from facecure.paths import CONF_DIR  # noqa: E402

# A zoo member small enough to train in seconds, on 32x32 renders of 24 public identities.
TINY_ZOO = [
    "extractor.arch_kwargs.widths=[8,16,16,32]", "extractor.arch_kwargs.stem=8",
    "extractor.embedding_dim=32", "extractor.input_size=32",
    "extractor.train.n_identities=24", "extractor.train.pictures_per_identity=6",
    "extractor.train.image_size=32", "extractor.train.epochs=1", "extractor.train.batch_size=32",
]
TINY_DATA = ["data.n_identities=8", "data.pictures_per_identity=5", "data.image_size=32"]
TINY_ATTACK = ["attack.steps=3", "attack.image_size=null", "attack.surrogates=[zoo_softmax]"]
TINY = TINY_ZOO + TINY_DATA + TINY_ATTACK + ["n_attackers=2", "progress=false",
                                            "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    os.environ["FACECURE_CACHE"] = str(path)
    return path


@pytest.fixture
def compose_cfg(cache_dir):
    """compose_cfg(*overrides) -> the composed root config (no Hydra app running)."""

    def _compose(*overrides, name="config"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(name, overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


def kill_at_first_checkpoint(proc, work: Path, pattern: str = "*.work/last.ckpt",
                             timeout: float = 120) -> None:
    """SIGKILL the training process `proc` as soon as a resume checkpoint exists under `work`."""
    deadline = time.time() + timeout
    while not list(work.glob(pattern)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(work.glob(pattern)), "no checkpoint was written before the kill"


# Real photos and the real models' weights, for any test module (tests/real_photos.py).
from real_photos import real_models, real_photos  # noqa: E402, F401
