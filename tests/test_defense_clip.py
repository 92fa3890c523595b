"""defense=clip_finetune: contrastive fine-tuning of CLIP on the public users, then WiSE-FT."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_DATA, kill_at_first_checkpoint
from test_zoo import TINY_CLIP

from facecure.app import run
from facecure.data.synthetic_dataset import synthetic_faces
from facecure.defenses.clip_finetune import ExtractorPreprocessed, clip_model_of, finetune_clip
from facecure.defenses.wiseft import interpolate_weights, wiseft_extractor
from facecure.extractors import create_extractor
from facecure.extractors.base import Extractor
from facecure.extractors.zoo_clip import PROMPT
from facecure.results import read_results


def overrides(spec: dict, prefix: str = "extractor") -> list[str]:
    """Hydra overrides `prefix.key=value` of a nested dict (TINY_CLIP as command-line items)."""
    out = []
    for key, value in spec.items():
        if isinstance(value, dict):
            out += overrides(value, f"{prefix}.{key}")
        else:
            out.append(f"{prefix}.{key}={json.dumps(value)}")
    return out


TINY_CLIP_RUN = (["extractor=zoo_clip", *overrides(TINY_CLIP), *TINY_DATA, "attack.steps=3",
                  "attack.image_size=null", "attack.surrogates=[zoo_clip]", "n_attackers=2",
                  "progress=false", "trainer.enable_progress_bar=false"])
TRAINER = {"enable_progress_bar": False}


@pytest.fixture
def tiny_clip(cache_dir):
    return create_extractor("zoo_clip", trainer=TRAINER, **TINY_CLIP)


def public_faces(n_users=4, per_user=5):
    data = synthetic_faces(n_users, per_user, 32, seed=3, population="evaluation", progress=False)
    pictures = [p for pics in data.identities.values() for p in pics]
    number = {u: i for i, u in enumerate(sorted(data.identities))}
    return pictures, [number[p.identity] for p in pictures]


def test_wiseft_endpoints_are_exactly_zero_shot_and_fine_tuned(tiny_clip):
    zero_shot = {k: v.clone() for k, v in clip_model_of(tiny_clip).state_dict().items()}
    torch.manual_seed(0)
    # A stand-in for fine-tuned weights: every float scaled by a positive factor (BatchNorm
    # variances stay positive), every integer buffer changed.
    tuned = {k: v * (1 + 0.2 * torch.rand_like(v)) if v.is_floating_point() else v + 7
             for k, v in zero_shot.items()}
    assert any(not v.is_floating_point() for v in zero_shot.values())  # BatchNorm counters
    x = torch.rand(4, 3, 40, 40)
    for alpha, expect in ((0, zero_shot), (1, tuned)):
        ex = wiseft_extractor(tiny_clip, tuned, alpha, "tuned-fp", clip_model_of)
        got = clip_model_of(ex).state_dict()
        for k, v in got.items():
            want = expect[k] if v.is_floating_point() else zero_shot[k]
            assert torch.equal(v, want), k
        assert ex.name == f"zoo_clip+wiseft@{float(alpha)}"
        # The extractor embeds through the interpolated image tower (backbone = model.visual).
        assert ex.backbone is clip_model_of(ex).visual
    ex0 = wiseft_extractor(tiny_clip, tuned, 0, "tuned-fp", clip_model_of)
    assert torch.equal(ex0(x), tiny_clip(x))
    ex1 = wiseft_extractor(tiny_clip, tuned, 1, "tuned-fp", clip_model_of)
    reference = create_extractor("zoo_clip", trainer=TRAINER, **TINY_CLIP)
    clip_model_of(reference).load_state_dict(tuned)
    assert torch.equal(ex1(x), reference(x)) and not torch.equal(ex1(x), tiny_clip(x))
    mid = interpolate_weights(zero_shot, tuned, 0.6)
    key = next(k for k, v in zero_shot.items() if v.is_floating_point())
    torch.testing.assert_close(mid[key], 0.6 * tuned[key] + 0.4 * zero_shot[key])
    assert clip_model_of(tiny_clip).state_dict().keys() == zero_shot.keys()
    assert all(torch.equal(v, zero_shot[k])  # the base extractor is left untouched
               for k, v in clip_model_of(tiny_clip).state_dict().items())
    fps = {wiseft_extractor(tiny_clip, tuned, a, "tuned-fp", clip_model_of).fingerprint
           for a in (0, 0.5, 1)}
    assert len(fps) == 3 and tiny_clip.fingerprint not in fps


def test_a_non_clip_extractor_is_refused_by_name():
    plain = Extractor("zoo_softmax", torch.nn.Flatten(), 12, 2, "fp")
    with pytest.raises(TypeError, match="zoo_softmax.*extractor=zoo_clip"):
        clip_model_of(plain)
    with pytest.raises(ValueError, match="alpha"):
        interpolate_weights({}, {}, 1.5)


def test_training_sees_pictures_as_the_extractor_preprocesses_them(tiny_clip):
    # A base with OpenAI-style normalisation and BGR order: ClipModule's [-1, 1] input must reach
    # the image tower exactly as Extractor.forward would preprocess the [0, 1] picture.
    model = clip_model_of(tiny_clip)
    base = Extractor("other", model.visual, 16, 32, "fp", mean=(0.48, 0.46, 0.41),
                     std=(0.27, 0.26, 0.28), channels="BGR")
    wrapped = ExtractorPreprocessed(model, base).eval()
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(wrapped.encode_image((x - 0.5) / 0.5), model.encode_image(
        base.preprocess(x)), rtol=1e-5, atol=1e-5)
    assert wrapped.logit_scale is model.logit_scale


def test_the_clip_adapter_is_fine_tuned_through_its_own_preprocessing(tmp_path):
    # extractor=clip: the backbone is the whole open_clip CLIP, with OpenAI's mean/std.
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from facecure.extractors.adapters.clip import ClipExtractor
    from facecure.extractors.zoo_clip import build_clip

    torch.manual_seed(0)
    model = build_clip(TINY_CLIP["embed_dim"], TINY_CLIP["vision_cfg"], TINY_CLIP["text_cfg"])
    base = ClipExtractor("clip", model, 16, 32, "clip-fp", mean=OPENAI_DATASET_MEAN,
                         std=OPENAI_DATASET_STD)
    assert clip_model_of(base) is model
    settings = {"epochs": 1, "lr": 1e-3, "batch_size": 4, "weight_decay": 0.1}
    tuned, fp = finetune_clip(base, *public_faces(), settings, tmp_path, 0, TRAINER)
    x = torch.rand(2, 3, 32, 32)
    zero, one = (wiseft_extractor(base, tuned, a, fp, clip_model_of) for a in (0, 1))
    assert type(one) is ClipExtractor and clip_model_of(one) is one.backbone
    assert torch.equal(zero(x), base(x)) and not torch.allclose(one(x), base(x))


def caption_scores(extractor, model, pictures, users):
    """(retrieval accuracy, mean ClipLoss) of pictures against their users' captions: the
    accuracy is the share of pictures whose own caption is the closest among all users'; the
    loss is over batches of one picture per user, as the fine-tuning sees them."""
    from open_clip.loss import ClipLoss
    from open_clip.tokenizer import SimpleTokenizer

    numbers = sorted(set(users))
    with torch.no_grad():
        text = model.encode_text(SimpleTokenizer(context_length=model.context_length)(
            [PROMPT.format(u) for u in numbers]), normalize=True)
        image = extractor.embed([p.load() for p in pictures])
    labels = torch.tensor(users)
    accuracy = ((image @ text.T).argmax(1) == labels).float().mean().item()
    rows = [torch.nonzero(labels == u).flatten() for u in numbers]
    batches = [torch.stack([r[j] for r in rows]) for j in range(min(len(r) for r in rows))]
    loss = sum(ClipLoss()(image[b], text, model.logit_scale.exp()).item() for b in batches)
    return accuracy, loss / len(batches)


def test_fine_tuning_learns_the_captions_and_is_cached(tmp_path):
    # A zoo member's first weights come from the global RNG: seed it, and use a cache of this
    # test's own, so that the CLIP fine-tuned here is the same in every session.
    torch.manual_seed(0)
    tiny_clip = create_extractor("zoo_clip", cache_dir=str(tmp_path / "zoo"), trainer=TRAINER,
                                 **TINY_CLIP)
    tmp_path = tmp_path / "defenses"
    pictures, users = public_faces()
    tiny_clip.requires_grad_(False)  # as an attack leaves its surrogate: fine-tuning copies it
    settings = {"epochs": 40, "lr": 2e-3, "batch_size": 128, "weight_decay": 0.0}
    before = caption_scores(tiny_clip, clip_model_of(tiny_clip), pictures, users)
    tuned, fp = finetune_clip(tiny_clip, pictures, users, settings, tmp_path, 0,
                              {"enable_progress_bar": False, "accelerator": "cpu"})
    tuned_ex = wiseft_extractor(tiny_clip, tuned, 1.0, fp, clip_model_of)
    after = caption_scores(tuned_ex, clip_model_of(tuned_ex), pictures, users)
    # 4 users: chance is 0.25 and ln 4 = 1.386 (15 epochs reached only (0.35, 1.28) from the
    # seeded tiny zoo_clip; 40 pass the bar)
    assert after[0] >= 0.5 and after[1] < 0.8 * before[1], (before, after)
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == [f"clip_finetune-{fp}.pt"]
    again, fp_again = finetune_clip(tiny_clip, pictures, users, settings, tmp_path, 0)
    assert fp_again == fp and all(torch.equal(again[k], v) for k, v in tuned.items())


def test_killed_fine_tuning_resumes_from_its_last_epoch(tiny_clip, tmp_path, caplog):
    settings = {"epochs": 6, "lr": 1e-4, "batch_size": 4, "weight_decay": 0.1}
    # The subprocess loads the tiny zoo_clip the fixture cached (FACECURE_CACHE is inherited).
    code = ("import json, sys; from pathlib import Path; "
            "from facecure.extractors import create_extractor; "
            "from facecure.defenses.clip_finetune import finetune_clip; "
            "from test_defense_clip import TINY_CLIP, TRAINER, public_faces; "
            "base = create_extractor('zoo_clip', trainer=TRAINER, **TINY_CLIP); "
            "finetune_clip(base, *public_faces(), json.loads(sys.argv[2]), Path(sys.argv[1]), 0, "
            "TRAINER)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), json.dumps(settings)],
                            cwd=Path(__file__).parent)
    kill_at_first_checkpoint(proc, tmp_path)
    assert not list(tmp_path.glob("*.pt"))
    with caplog.at_level("INFO", logger="facecure.extractors.training"):
        finetune_clip(tiny_clip, *public_faces(), settings, tmp_path, 0, TRAINER)
    assert "resuming training" in caplog.text
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.work"))


def test_clip_finetune_run_scores_every_alpha(compose_cfg, tmp_path, cache_dir):
    cfg = compose_cfg(*TINY_CLIP_RUN, "defense=clip_finetune", "defense.epochs=1",
                      "defense.alphas=[0.0,0.5,1.0]", f"+run_dir={tmp_path}")
    run(cfg)
    records = read_results(tmp_path / "results.jsonl")
    aggregates = [r for r in records if r["kind"] == "aggregate"]
    assert sorted((a["alpha"], a["attack"]) for a in aggregates) == sorted(
        (alpha, attack) for alpha in (0.0, 0.5, 1.0) for attack in ("none", "fawkes_v10"))
    assert {a["defense"] for a in aggregates} == {"clip_finetune"}
    assert {a["extractor"] for a in aggregates} == {f"zoo_clip+wiseft@{a}" for a in (0.0, 0.5, 1.0)}
    attackers = [r for r in records if r["kind"] == "attacker"]
    assert len(attackers) == 3 * 2 * 2 and all(0 <= r["protection_rate"] <= 1 for r in attackers)
    assert records[0]["n_public"] == 4
    assert len(list((cache_dir / "defenses").glob("clip_finetune-*.pt"))) == 1
