import numpy as np
import torch

from facecure.attacks import NoAttack, PerturbedStore
from facecure.attacks.base import Attack
from facecure.data import synthetic_faces
from facecure.evaluation import EmbeddingStore
from facecure.extractors.base import Extractor
from facecure.extractors.zoo_nets import ZooCNN


def tiny_extractor(fp="tiny-0"):
    torch.manual_seed(0)
    return Extractor("tiny", ZooCNN(16, (4, 8, 8, 8), 4), 16, 32, fingerprint=fp)


class CountingExtractor(Extractor):
    calls = 0

    def embed(self, pictures, batch_size=256, progress=False):
        CountingExtractor.calls += len(pictures)
        return super().embed(pictures, batch_size, progress)


def test_embedding_store_embeds_each_picture_once(tmp_path):
    torch.manual_seed(0)
    ex = CountingExtractor("tiny", ZooCNN(16, (4, 8, 8, 8), 4), 16, 32, fingerprint="count-0")
    pics = [p for ps in synthetic_faces(3, 4, 32, progress=False).identities.values() for p in ps]
    store = EmbeddingStore(tmp_path, shard_size=5)
    first = store.embed(ex, pics, progress=False)
    assert first.shape == (12, 16) and CountingExtractor.calls == 12
    again = EmbeddingStore(tmp_path).embed(ex, pics + pics[:2], progress=False)  # from disk
    assert CountingExtractor.calls == 12
    np.testing.assert_array_equal(again[:12], first)
    assert len(list((tmp_path / "count-0").glob("*.npz"))) == 3  # shards of 5, 5, 2
    assert not list(tmp_path.rglob("*.tmp"))


class CountingAttack(Attack):
    name = "counting"

    def __init__(self):
        self.seen = 0

    def perturb(self, x, identities):
        self.seen += len(x)
        return (x + 4 / 255).clamp(0, 1)


def test_perturbed_store_never_attacks_twice_and_records_budget(tmp_path):
    pics = [p for ps in synthetic_faces(2, 3, 32, progress=False).identities.values() for p in ps]
    attack = CountingAttack()
    store = PerturbedStore(tmp_path, batch_size=4)
    out, budgets = store.perturb_pictures(attack, pics, progress=False)
    assert attack.seen == 6 and len(out) == 6
    assert [p.identity for p in out] == [p.identity for p in pics]
    assert all(p.key != q.key for p, q in zip(out, pics))
    assert all(b["linf"] <= 4 / 255 + 1e-6 and b["dssim"] >= 0 for b in budgets)
    assert len(list((tmp_path / attack.fingerprint).glob("*.png"))) == 6
    again, _ = PerturbedStore(tmp_path).perturb_pictures(attack, pics, progress=False)
    assert attack.seen == 6
    assert [p.key for p in again] == [p.key for p in out]  # PNG is lossless
    clean, _ = store.perturb_pictures(NoAttack(), pics, progress=False)
    assert [p.key for p in clean] == [p.key for p in pics]


def test_resized_attack_input_stays_on_the_8_bit_grid_and_budget(tmp_path):
    pics = [p for ps in synthetic_faces(2, 2, 32, progress=False).identities.values() for p in ps]
    attack = CountingAttack()
    attack.image_size = 45  # an odd size: the resized picture falls between 8-bit levels
    out, budgets = PerturbedStore(tmp_path).perturb_pictures(attack, pics, progress=False)
    assert all(p.load().shape == (45, 45, 3) for p in out)
    assert all(b["linf"] <= 4 / 255 + 1e-6 for b in budgets)


def test_budget_records_lpips_when_a_measure_is_given(tmp_path):
    from facecure.results import budget_summary

    pics = [p for ps in synthetic_faces(1, 2, 32, progress=False).identities.values() for p in ps]
    fake_lpips = lambda x, y: (x - y).abs().flatten(1).mean(1)  # noqa: E731  (any (B,) measure)
    _, budgets = PerturbedStore(tmp_path, lpips=fake_lpips).perturb_pictures(
        CountingAttack(), pics, progress=False)
    assert all(b["lpips"] > 0 for b in budgets)
    assert budget_summary(budgets)["lpips_mean"] > 0
    _, plain = PerturbedStore(tmp_path / "b").perturb_pictures(CountingAttack(), pics, progress=False)
    assert budget_summary(plain)["lpips_mean"] is None  # not measured, not a made-up number


class SlowAttack(CountingAttack):
    """Takes a second per batch, so a test can kill it between two batches."""

    def perturb(self, x, identities):
        import time

        time.sleep(1.0)
        return super().perturb(x, identities)


def test_killed_attack_resumes_without_attacking_stored_pictures(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = ("import sys; sys.path.insert(0, sys.argv[2]); from test_stores import SlowAttack; "
            "from facecure.attacks import PerturbedStore; from facecure.data import synthetic_faces; "
            "pics = [p for ps in synthetic_faces(4, 2, 32, progress=False).identities.values() for p in ps]; "
            "PerturbedStore(sys.argv[1], batch_size=2).perturb_pictures(SlowAttack(), pics, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(Path(__file__).parent)])
    deadline = time.time() + 60
    while len(list(tmp_path.rglob("*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(tmp_path.rglob("*.json")))
    assert 2 <= done < 8, "the kill should land between the first and the last batch"
    pics = [p for ps in synthetic_faces(4, 2, 32, progress=False).identities.values() for p in ps]
    attack = CountingAttack()
    out, _ = PerturbedStore(tmp_path, batch_size=2).perturb_pictures(attack, pics, progress=False)
    assert attack.seen == 8 - done  # only what the killed run had not stored
    assert len(out) == 8 and not list(tmp_path.rglob("*.tmp"))


def test_concurrent_jobs_train_a_zoo_member_once(tmp_path):
    """Two processes build the same zoo member on one cache at once (a sweep's jobs): one trains
    while the other waits on the lock, then loads the same weights; nothing crashes."""
    import json
    import subprocess
    import sys

    from test_zoo import tiny

    script = ("import sys, json, logging; from facecure.extractors import create_extractor\n"
              "logging.basicConfig(level=logging.INFO)\n"
              "ex = create_extractor('zoo_softmax', cache_dir=sys.argv[1], "
              "trainer={'enable_progress_bar': False}, **json.loads(sys.argv[2]))\n"
              "print(sum(float(p.double().sum()) for p in ex.state_dict().values() if p.is_floating_point()))")
    spec = tiny("zoo_softmax")
    spec["train"].update(epochs=3)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), json.dumps(spec)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert outs[0][0].split()[-1] == outs[1][0].split()[-1]
    logs = "".join(err for _, err in outs)
    assert logs.count("training zoo member") == 1, logs[-2000:]
