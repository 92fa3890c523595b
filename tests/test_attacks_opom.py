"""OPOM: one mask per user, within its budget, away from the user's feature subspace."""
import pytest
import torch
import torch.nn.functional as F
from test_attacks_lowkey_pgd import one_thread, surrogate  # noqa: F401 (a fixture)

from facecure.attacks import OPOM
from facecure.attacks.opom import nearest_in_affine_hull, nearest_in_convex_hull
from facecure.data import synthetic_faces
from facecure.extractors.base import to_tensor

EPS = 8 / 255
IDS = ["a", "a", "b", "b"]


@pytest.fixture(scope="module")
def pictures() -> torch.Tensor:
    """4 pictures (2 identities x 2) of 32x32, RGB in [0, 1]."""
    data = synthetic_faces(2, 2, 32, progress=False)
    return torch.stack([to_tensor(p.load()) for ps in data.identities.values() for p in ps])


@pytest.fixture(scope="module")
def surrogates():
    return [surrogate(1), surrogate(2)]


def opom(surrogates, **kw):
    return OPOM(surrogates, **{"image_size": None, **kw})


@pytest.mark.parametrize("variant", ["class_center", "convex_hull", "affine_hull"])
def test_one_mask_per_user_within_budget(pictures, surrogates, variant):
    out = opom(surrogates, variant=variant).perturb(pictures, IDS)
    delta = out - pictures
    assert delta.abs().max() <= EPS + 1e-6
    assert out.min() >= 0 and out.max() <= 1
    # One mask per user: equal on each of the user's pictures where no pixel was clamped.
    inside = ((pictures > EPS) & (pictures < 1 - EPS)).all(0)
    for rows in ([0, 1], [2, 3]):
        assert torch.allclose(delta[rows[0]][inside], delta[rows[1]][inside], atol=1e-6)
        assert delta[rows[0]].abs().max() > EPS / 2  # it moved
    assert not torch.allclose(delta[0], delta[2])  # and the two users' masks differ


def test_masks_move_features_further_than_the_random_start(pictures, surrogates):
    def moved(attack):
        out = attack.perturb(pictures, IDS)
        return sum((attack.features(f, out) - attack.features(f, pictures)).norm(dim=1).mean()
                   for f in surrogates)
    assert moved(opom(surrogates, steps=16)) > 1.5 * moved(opom(surrogates, steps=0))


def test_a_users_mask_does_not_depend_on_the_batch(pictures, surrogates):
    attack = opom(surrogates, variant="convex_hull")
    together = attack.perturb(pictures, IDS)
    alone = attack.perturb(pictures[2:], IDS[2:])
    assert torch.allclose(together[2:], alone, atol=1e-6)
    assert torch.equal(attack.perturb(pictures, IDS), together)  # seeded


def test_hull_projections():
    torch.manual_seed(0)
    points = F.normalize(torch.randn(5, 16), dim=1)
    inside = torch.tensor([[0.2, 0.3, 0.1, 0.4, 0.0]]) @ points
    assert torch.allclose(nearest_in_convex_hull(points, inside), inside, atol=1e-4)
    assert torch.allclose(nearest_in_affine_hull(points, inside), inside, atol=1e-5)
    far = F.normalize(torch.randn(3, 16), dim=1)
    convex, affine = nearest_in_convex_hull(points, far), nearest_in_affine_hull(points, far)
    # The affine hull holds the convex one: its nearest point is at least as near.
    assert ((far - affine).norm(dim=1) <= (far - convex).norm(dim=1) + 1e-5).all()
    # The convex projection is the best point of the hull: no vertex nor the centre is nearer.
    for candidate in [*points, points.mean(0)]:
        assert ((far - convex).norm(dim=1) <= (far - candidate).norm(dim=1) + 1e-4).all()


def test_settings_and_fingerprints(surrogates):
    base = opom(surrogates)
    assert base.fingerprint == opom(surrogates).fingerprint
    for change in ({"variant": "class_center"}, {"epsilon": 4 / 255}, {"steps": 8},
                   {"momentum": True}, {"seed": 1}, {"surrogates": surrogates[:1]}):
        kw = {"surrogates": surrogates, **change}
        assert OPOM(**{"image_size": None, **kw}).fingerprint != base.fingerprint, change
    with pytest.raises(ValueError, match="variant must be one of"):
        opom(surrogates, variant="hull")


def test_momentum_variant_stays_in_budget(pictures, surrogates):
    out = opom(surrogates, momentum=True, steps=4).perturb(pictures, IDS)
    assert (out - pictures).abs().max() <= EPS + 1e-6
