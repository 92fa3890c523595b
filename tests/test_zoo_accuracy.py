"""Every zoo member, trained with its real recipe, recognises the evaluation identities.

Slow: trains each member on first use (minutes each on a CPU). It uses the project's cache
(`.cache/zoo`, or $FACECURE_ZOO_CACHE), since the weights are fingerprinted by their recipe and a
cached member is exactly what a run would load.
"""
import os

import pytest
from test_zoo import ZOO

from facecure.data.synthetic_dataset import synthetic_faces
from facecure.extractors import create_extractor
from facecure.extractors.accuracy import clean_accuracy
from facecure.paths import PROJECT_ROOT


@pytest.fixture(scope="module")
def evaluation_faces():
    return synthetic_faces(100, 20, 64, seed=0, progress=False)


# zoo_arcface's seeded recipe reaches 0.785 (README, "The embedded zoo of eras"): margin losses
# on this small CNN depend on the initial draw, and retraining it would change every stored
# Fawkes v1.0 and LowKey cloak it is a surrogate for. Strict: a fix makes this fail loudly.
KNOWN_SHORT = {"zoo_arcface": "the seeded zoo_arcface recipe reaches 0.785 clean accuracy"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_SHORT[n])) if n in KNOWN_SHORT
    else n for n in ZOO])
def test_zoo_member_reaches_085_clean_accuracy(name, evaluation_faces):
    cache = os.environ.get("FACECURE_ZOO_CACHE", str(PROJECT_ROOT / ".cache" / "zoo"))
    extractor = create_extractor(name, cache_dir=cache, trainer={"enable_progress_bar": False})
    assert clean_accuracy(extractor, evaluation_faces) >= 0.85
