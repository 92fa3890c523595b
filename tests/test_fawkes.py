import pytest
import torch
from torch import nn

from facecure.attacks import FawkesV10
from facecure.attacks.budget import dssim
from facecure.attacks.fawkes import next_k
from facecure.data import synthetic_faces
from facecure.extractors.base import Extractor, to_tensor


def surrogate():
    """A random conv net: sensitive to its input, as a trained face model is."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, 2), nn.ReLU(), nn.Conv2d(8, 8, 3, 2), nn.ReLU(),
                        nn.Flatten(), nn.LazyLinear(16))
    net(torch.zeros(1, 3, 32, 32))
    return Extractor("s", net, 16, 32, fingerprint="s-1")


def test_fawkes_v10_moves_features_within_its_budget():
    pics = [p.load() for ps in synthetic_faces(2, 3, 48, progress=False).identities.values() for p in ps]
    x = torch.stack([to_tensor(p) for p in pics])
    s = surrogate()
    attack = FawkesV10([s], mode="mid", steps=30, image_size=None)
    x_adv = attack.perturb(x, ["a"] * len(x))
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 15 / 255 + 1e-6
    # within 1.1 th, or (save_last_on_failed) a weak cloak's last iterate under DSSIM 0.015
    assert (dssim(x_adv, x) <= max(1.1 * attack.threshold, 0.015) + 1e-6).all()
    with torch.no_grad():
        moved = (s(x_adv) - s(x)).norm(dim=1)
        noise = (s((x + torch.empty_like(x).uniform_(-3 / 255, 3 / 255)).clamp(0, 1)) - s(x)).norm(dim=1)
    assert (moved > 3 * noise).all()  # the cloak moves features far more than noise does


def test_fawkes_v10_modes_and_fingerprint():
    s = surrogate()
    high, low = FawkesV10([s], mode="high"), FawkesV10([s], mode="low")
    assert (high.threshold, high.steps, high.lr) == (0.017, 150, 15)
    assert (low.threshold, low.steps, low.lr) == (0.004, 40, 25)
    assert high.fingerprint != low.fingerprint
    assert high.fingerprint == FawkesV10([s], mode="high").fingerprint


@pytest.mark.parametrize("dist, k, side, expected", [
    (0.5, 1.0, 0, (2.0, 1)),      # below the band: double
    (0.5, 4.0, 1, (8.0, 1)),      # still below: keep doubling
    (0.5, 4.0, -1, (1.0, 1)),     # crossed from above: back to 1
    (0.5, 256.0, 1, (1.0, 0)),    # at the bound: back to 1 (the official else branch)
    (2.0, 1.0, 0, (0.5, -1)),     # above the band: halve
    (2.0, 0.25, -1, (0.125, -1)),
    (2.0, 0.25, 1, (1.0, -1)),    # crossed from below: back to 1
    (1.0, 8.0, 1, (1.0, 0)),      # inside the band: 1
])
def test_fawkes_v10_k_follows_the_official_schedule(dist, k, side, expected):
    # threshold 1: the band is [0.9, 1.1]
    new_k, new_side = next_k(torch.tensor([k]), torch.tensor([float(side)]), torch.tensor([dist]), 1.0)
    assert (new_k.item(), new_side.item()) == expected


def test_fawkes_v10_saves_the_last_iterate_of_a_failed_cloak():
    """Every iterate after the first leaves a tiny budget, so the best in-budget cloak is the
    (almost) clean start; the official tool then keeps the last iterate if its DSSIM < 0.015."""
    pics = [p.load() for ps in synthetic_faces(2, 2, 48, progress=False).identities.values() for p in ps]
    x = torch.stack([to_tensor(p) for p in pics])
    kw = {"mode": "low", "threshold": 1e-6, "steps": 4, "max_change": 3 / 255, "image_size": None}
    off = FawkesV10([surrogate()], save_last_on_failed=False, **kw)
    on = FawkesV10([surrogate()], **kw)
    assert on.fingerprint != off.fingerprint
    kept_start, kept_last = off.perturb(x, ["a"] * len(x)), on.perturb(x, ["a"] * len(x))
    assert (kept_start - x).abs().amax(dim=(1, 2, 3)).max() < 0.5 / 255
    moved = (kept_last - x).abs().amax(dim=(1, 2, 3))
    assert (moved > 1 / 255).all() and (dssim(kept_last, x) < 0.015).all()


def v03(**kw):
    from facecure.attacks import FawkesV03

    candidates = synthetic_faces(24, 2, 32, population="candidates", progress=False)
    return FawkesV03([surrogate()], candidates, **{"mode": "low", "image_size": None, **kw})


def test_fawkes_v03_pulls_features_to_its_target_within_budget():
    data = synthetic_faces(2, 3, 48, progress=False)
    pics = [p for ps in data.identities.values() for p in ps]
    x = torch.stack([to_tensor(p.load()) for p in pics])
    ids = [p.identity for p in pics]
    attack = v03(mode="mid", steps=60)
    s = attack.surrogates[0]
    targets = attack.feature_targets(x, ids)[0]
    x_adv = attack.perturb(x, ids)
    with torch.no_grad():
        before = (s(x) - targets).norm(dim=1)
        after = (s(x_adv) - targets).norm(dim=1)
    assert (after < before).all()  # the loss went down for every picture
    # within 1.1 th, or (save_last_on_failed) a weak cloak's last iterate under DSSIM 0.015
    assert (dssim(x_adv, x) <= max(1.1 * attack.threshold, 0.015) + 1e-6).all()
    assert torch.equal(attack.perturb(x, ids), x_adv)  # deterministic
    # One target class per user, among the 20 farthest candidates.
    assert attack.target_class(ids[0], s(x[:3])) == attack.target_class(ids[0], s(x[:3]))
    assert (attack.steps, attack.lr) == (60, 20) and v03(mode="high").threshold == 0.008


def test_fawkes_v03_needs_enough_candidate_classes():
    from facecure.attacks import FawkesV03

    with pytest.raises(ValueError, match="n_farthest"):
        FawkesV03([surrogate()], synthetic_faces(5, 2, 32, progress=False), image_size=None)
