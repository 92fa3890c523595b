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


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_member_reaches_085_clean_accuracy(name, evaluation_faces):
    cache = os.environ.get("FACECURE_ZOO_CACHE", str(PROJECT_ROOT / ".cache" / "zoo"))
    extractor = create_extractor(name, cache_dir=cache, trainer={"enable_progress_bar": False})
    assert clean_accuracy(extractor, evaluation_faces) >= 0.85
