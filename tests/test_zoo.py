"""The zoo's losses as their papers write them, and every zoo member trains and embeds."""
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TINY_ZOO, kill_at_first_checkpoint

from facecure.extractors import create_extractor
from facecure.extractors.heads import ArcFaceHead, CosFaceHead, MagFaceHead, SoftmaxHead
from facecure.extractors.listing import describe

ZOO = ["zoo_softmax", "zoo_arcface", "zoo_cosface", "zoo_ir_arcface", "zoo_ir_cosface",
       "zoo_magface", "zoo_clip"]


def angles(head, z, labels):
    w = F.normalize(head.weight, dim=1)
    return torch.acos((F.normalize(z, dim=1) * w[labels]).sum(1).clamp(-1, 1))


def test_arcface_adds_an_angle_to_the_true_class_only():
    torch.manual_seed(0)
    head, z, y = ArcFaceHead(8, 5), torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    logits, extra = head(z, y)
    theta = angles(head, z, y)
    expect = torch.where(theta + 0.5 < math.pi, torch.cos(theta + 0.5), torch.cos(theta) - 0.5 * math.sin(0.5))
    torch.testing.assert_close(logits.gather(1, y[:, None]).squeeze(1), 64 * expect, rtol=1e-4, atol=1e-4)
    other = torch.ones_like(logits, dtype=torch.bool).scatter(1, y[:, None], False)
    torch.testing.assert_close(logits[other], 64 * head.cosine(z)[other])
    assert head.s == 64 and head.m == 0.5 and extra == 0


def test_cosface_subtracts_a_cosine_margin():
    torch.manual_seed(0)
    head, z, y = CosFaceHead(8, 5), torch.randn(4, 8), torch.tensor([1, 2, 3, 4])
    logits, _ = head(z, y)
    cos = head.cosine(z)
    torch.testing.assert_close(logits, 64 * (cos - 0.35 * F.one_hot(y, 5)))


def test_magface_margin_and_regulariser_follow_the_feature_norm():
    torch.manual_seed(0)
    head = MagFaceHead(8, 5)
    y = torch.tensor([0, 1])
    direction = F.normalize(torch.randn(2, 8), dim=1)
    for norm, margin in ((10.0, 0.45), (110.0, 0.8), (60.0, 0.625)):
        z = direction * norm
        logits, extra = head(z, y)
        theta = angles(head, z, y)
        expect = torch.where(theta + margin < math.pi, torch.cos(theta + margin),
                             torch.cos(theta) - margin * math.sin(margin))
        torch.testing.assert_close(logits.gather(1, y[:, None]).squeeze(1), 64 * expect,
                                   rtol=1e-4, atol=1e-4)
        assert extra.item() == pytest.approx(35 * (norm / 110 ** 2 + 1 / norm), rel=1e-5)


def test_softmax_head_is_linear():
    head = SoftmaxHead(4, 3)
    z = torch.randn(2, 4)
    torch.testing.assert_close(head(z, torch.tensor([0, 1]))[0], head.fc(z))


TINY_CLIP = {"embed_dim": 16, "input_size": 32,
             "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8, "head_width": 16, "image_size": 32},
             "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
             "train": {"n_identities": 12, "pictures_per_identity": 4, "image_size": 32, "epochs": 1,
                       "batch_size": 8}}


def tiny(name):
    if name == "zoo_clip":
        return TINY_CLIP
    spec = {}
    for item in TINY_ZOO:
        key, value = item.removeprefix("extractor.").split("=", 1)
        node = spec
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return spec


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_member_trains_caches_and_is_a_surrogate(name, cache_dir):
    ex = create_extractor(name, trainer={"enable_progress_bar": False}, **tiny(name))
    x = torch.rand(3, 3, 40, 40, requires_grad=True)
    z = ex(x)
    assert z.shape == (3, ex.embedding_dim) and torch.isfinite(z).all()
    z.sum().backward()
    assert x.grad.abs().sum() > 0  # differentiable: usable as an attack surrogate
    again = create_extractor(name, trainer={"enable_progress_bar": False}, **tiny(name))
    assert again.fingerprint == ex.fingerprint
    torch.testing.assert_close(again(x.detach()), z.detach())  # loaded from the cache


def test_listing_orders_by_date_and_flags_zoo():
    rows = describe()
    assert [r["date"] for r in rows] == sorted(r["date"] for r in rows)
    names = {r["name"]: r for r in rows}
    assert set(ZOO) <= set(names)
    assert all(names[n]["differentiable"] for n in ZOO)


def test_killed_zoo_training_resumes_from_its_last_epoch(tmp_path, caplog):
    import subprocess
    import sys

    spec = tiny("zoo_softmax")
    spec["train"].update(epochs=40, n_identities=12, pictures_per_identity=4)
    code = ("from facecure.extractors import create_extractor; import json, sys; "
            "create_extractor('zoo_softmax', cache_dir=sys.argv[1], "
            "trainer={'enable_progress_bar': False}, **json.loads(sys.argv[2]))")
    import json
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), json.dumps(spec)])
    kill_at_first_checkpoint(proc, tmp_path)
    assert not list(tmp_path.glob("*.pt"))
    with caplog.at_level("INFO", logger="facecure.extractors.training"):
        create_extractor("zoo_softmax", cache_dir=str(tmp_path),
                         trainer={"enable_progress_bar": False}, **spec)
    assert "resuming training" in caplog.text
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.work"))


@pytest.mark.parametrize("name", ["zoo_softmax", "zoo_clip"])
def test_zoo_training_is_reproducible_in_a_fresh_process_on_any_core_count(name, tmp_path):
    """The recipe's seed fixes the initial weights too, and the fit's thread count is fixed:
    two fresh processes, one on 1 thread and one on 2 (a laptop and a cluster node differ so),
    two empty caches, the same weights (the cache key is the recipe, so it must determine them)."""
    import subprocess
    import sys

    script = ("import sys, json, torch; torch.set_num_threads(int(sys.argv[3]))\n"
              "from facecure.extractors import create_extractor\n"
              f"ex = create_extractor({name!r}, cache_dir=sys.argv[1], trainer={{'enable_progress_bar': False}}, "
              f"**json.loads(sys.argv[2]))\n"
              "print(sum(float(p.double().sum()) for p in ex.state_dict().values() if p.is_floating_point()))")
    import json
    sums = [subprocess.run([sys.executable, "-c", script, str(tmp_path / str(i)), json.dumps(tiny(name)),
                            str(i + 1)],
                           capture_output=True, text=True, check=True).stdout.split()[-1] for i in range(2)]
    assert sums[0] == sums[1]


def test_training_progress_reaches_a_log_file(tmp_path, capfd):
    """A fit writes tqdm's bar to a redirected stdout (rich's live bar would stay blank there
    until the end: a SLURM job's log or `make reproduce > log` showed no training at all)."""
    from lightning.pytorch import LightningModule
    from torch.utils.data import DataLoader, TensorDataset

    from facecure.extractors.training import fit_resumable

    class Tiny(LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)
    fit_resumable(Tiny(), loader, 2, tmp_path / "work", {"enable_progress_bar": True})
    assert "Epoch 1: 100%|" in capfd.readouterr().out
    fit_resumable(Tiny(), loader, 1, tmp_path / "quiet", {"enable_progress_bar": False})
    assert "Epoch" not in capfd.readouterr().out
