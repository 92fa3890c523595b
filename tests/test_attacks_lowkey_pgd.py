import pytest
import torch
import torchvision
from torch import nn

from facecure.attacks import PGD, LowKey, lpips_distance
from facecure.attacks.lowkey import ALEXNET_FILE
from facecure.data import synthetic_faces
from facecure.extractors.base import Extractor, to_tensor

EPS = 8 / 255


def surrogate(seed: int) -> Extractor:
    """A random conv net: sensitive to its input, as a trained face model is."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, 2), nn.ReLU(), nn.Conv2d(8, 8, 3, 2), nn.ReLU(),
                        nn.Flatten(), nn.LazyLinear(16))
    net(torch.zeros(1, 3, 32, 32))
    return Extractor(f"s{seed}", net, 16, 32, fingerprint=f"s-{seed}")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors here are tiny: one thread avoids OpenMP's contention on busy shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pictures() -> torch.Tensor:
    """4 pictures (2 identities x 2) of 32x32, RGB in [0, 1]."""
    data = synthetic_faces(2, 2, 32, progress=False)
    return torch.stack([to_tensor(p.load()) for ps in data.identities.values() for p in ps])


@pytest.fixture(scope="module")
def surrogates() -> list[Extractor]:
    return [surrogate(1), surrogate(2)]


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory):
    """A random AlexNet saved as torchvision publishes it (a full state dict)."""
    path = tmp_path_factory.mktemp("weights") / ALEXNET_FILE
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def lowkey(surrogates, **kw):
    return LowKey(surrogates, **{"image_size": None, "perceptual": "dssim", **kw})


def test_lowkey_ascends_its_objective_and_is_seeded(pictures, surrogates):
    ids = ["a", "a", "b", "b"]
    start = lowkey(surrogates, steps=0).perturb(pictures, ids)  # the random start alone
    attack = lowkey(surrogates, steps=8)
    x_adv = attack.perturb(pictures, ids)
    assert x_adv.shape == pictures.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    # no projection: after k signed steps a pixel is within noise + k * step of the original
    assert (x_adv - pictures).abs().max() <= attack.noise + 8 * attack.step_size + 1e-6
    with torch.no_grad():
        assert (attack.objective(x_adv, pictures) > attack.objective(start, pictures)).all()
    assert torch.equal(x_adv, lowkey(surrogates, steps=8).perturb(pictures, ids))
    assert not torch.equal(x_adv, lowkey(surrogates, steps=8, seed=1).perturb(pictures, ids))


def test_lowkey_blurred_copies_compare_with_clean_features(pictures, surrogates):
    """Eq. (1): at x' = x the plain terms vanish, the blurred ones do not (reference: F(x))."""
    attack = lowkey(surrogates, perceptual_weight=0.0)
    with torch.no_grad():
        at_x = attack.objective(pictures, pictures)
        f = surrogates[0]
        blurred = (attack.features(f, attack.blur(pictures)) - attack.features(f, pictures))
    assert (at_x > 0).all() and (blurred.abs().sum(1) > 0).all()


def test_lowkey_fingerprints(surrogates, alexnet_weights):
    base = lowkey(surrogates)
    assert base.fingerprint == lowkey(surrogates).fingerprint
    for changed in [lowkey(surrogates, steps=10), lowkey(surrogates, seed=1),
                    lowkey(surrogates, perceptual_weight=0.1), lowkey(surrogates[:1]),
                    lowkey(surrogates, perceptual="lpips", alexnet_weights=str(alexnet_weights))]:
        assert changed.fingerprint != base.fingerprint
    assert base.params()["perceptual"] == "dssim"


def test_lowkey_with_lpips(pictures, surrogates, alexnet_weights):
    attack = lowkey(surrogates, steps=2, perceptual="lpips", alexnet_weights=str(alexnet_weights))
    saved = torch.load(alexnet_weights, weights_only=True)
    trunk = attack._lpips.net.state_dict()  # AlexNet's features.<i> live in LPIPS' slices
    assert torch.equal(trunk["slice1.0.weight"], saved["features.0.weight"])
    assert torch.equal(trunk["slice5.10.bias"], saved["features.10.bias"])
    x_adv = attack.perturb(pictures, ["a"] * 4)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and not torch.equal(x_adv, pictures)
    d = lpips_distance(x_adv, pictures, alexnet_weights)
    assert d.shape == (4,) and (d >= 0).all() and (d > 0).any()
    assert torch.equal(lpips_distance(pictures, pictures, alexnet_weights), torch.zeros(4))


def test_lowkey_without_alexnet_weights_says_what_to_do(surrogates, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("FACECURE_CACHE", str(tmp_path / "cache"))  # no converted trunk either
    missing = str(tmp_path / "nowhere" / ALEXNET_FILE)
    with pytest.raises(FileNotFoundError) as err:
        lowkey(surrogates, perceptual="lpips", alexnet_weights=missing)
    for part in [ALEXNET_FILE, "perceptual=dssim", "download.pytorch.org", missing,
                 str(tmp_path / "hub" / "checkpoints"), "make weights-lpips",
                 str(tmp_path / "cache" / "weights" / "lpips" / "alexnet.pth")]:
        assert part in str(err.value)
    with pytest.raises(FileNotFoundError, match="make weights-lpips"):
        lpips_distance(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), missing)
    lowkey(surrogates, steps=1, alexnet_weights=missing).perturb(torch.rand(1, 3, 32, 32), ["a"])


def test_pgd_untargeted_ascends_within_its_budget(pictures, surrogates):
    ids = ["a", "a", "b", "b"]
    attack = PGD(surrogates, epsilon=EPS, steps=6, image_size=None)
    assert attack.step_size == pytest.approx(2.5 * EPS / 6)
    x_adv = attack.perturb(pictures, ids)
    assert (x_adv - pictures).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    start = PGD(surrogates, epsilon=EPS, steps=0, image_size=None).perturb(pictures, ids)
    refs = attack.references(pictures, ids)
    with torch.no_grad():
        assert (attack.loss(x_adv, refs) > attack.loss(start, refs)).all()
    assert torch.equal(x_adv, PGD(surrogates, epsilon=EPS, steps=6, image_size=None)
                       .perturb(pictures, ids))


def test_pgd_targeted_pulls_towards_the_users_target(pictures, surrogates):
    candidates = synthetic_faces(3, 2, 32, population="candidates", progress=False)
    ids = ["a", "a", "b", "b"]
    attack = PGD(surrogates, epsilon=EPS, steps=6, targeted=True, candidates=candidates,
                 image_size=None)
    refs = attack.references(pictures, ids)
    assert torch.equal(refs[0][0], refs[0][1])  # one target per user
    x_adv = attack.perturb(pictures, ids)
    assert (x_adv - pictures).abs().max() <= EPS + 1e-6
    with torch.no_grad():
        assert (attack.loss(x_adv, refs) < attack.loss(pictures, refs)).all()


def test_pgd_settings_and_fingerprints(surrogates):
    candidates = synthetic_faces(3, 2, 32, population="candidates", progress=False)
    base = PGD(surrogates, candidates=candidates)
    assert base.fingerprint == PGD(surrogates).fingerprint  # candidates unused when untargeted
    for changed in [PGD(surrogates, epsilon=EPS), PGD(surrogates, steps=10),
                    PGD(surrogates, seed=1), PGD(surrogates[:1]),
                    PGD(surrogates, targeted=True, candidates=candidates)]:
        assert changed.fingerprint != base.fingerprint
    with pytest.raises(ValueError, match="random_start"):
        PGD(surrogates, random_start=False)
    with pytest.raises(ValueError, match="candidates"):
        PGD(surrogates, targeted=True)
