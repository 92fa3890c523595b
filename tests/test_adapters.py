"""The adapters read weights in their real published formats and embed like the reference code.

Each test saves a small random model in the real format, builds the extractor from its config,
and compares its embeddings of raw uint8 pictures with the reference library's own forward and
documented preprocessing (facenet-pytorch, insightface, open_clip, timm, onnxruntime; for
arcface_torch, MagFace and VGG-Face, which are not installable, a functional re-statement of
their forward written here from their sources).
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from facecure.extractors import create_extractor
from facecure.extractors.adapters import IncompatibleWeightsError, MissingWeightsError
from facecure.extractors.adapters.iresnet import IResNet, iresnet
from facecure.extractors.adapters.vggface import VGGFace, matconvnet_names
from facecure.paths import CONF_DIR

ATOL = 1e-4
TINY = [1, 1, 1, 1]  # one block per iResNet stage
CONFIGS = {"facenet": "facenet/20180402-114759-vggface2.pt",
           "webface": "webface/20180408-102900-casia-webface.pt",
           "vggface": "vggface/vgg_face_dag.pth", "celeb1m": "celeb1m/extractor_2.onnx",
           "onnx": "onnx/model.onnx", "arcface": "arcface/backbone.pth",
           "magface": "magface/magface_epoch_00025.pth",
           "clip": "clip/open_clip_model.safetensors", "timm": "timm/resnet50.safetensors"}


def pictures(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """uint8 RGB pictures with distinct coarse content (so embeddings differ) plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.int16)
        out.append(np.clip(smooth + rng.integers(-30, 31, smooth.shape), 0, 255).astype(np.uint8))
    return out


def randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so eval-mode normalisation is exercised."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


def max_diff(ours: torch.Tensor, reference) -> float:
    """Max abs difference of L2-normalised embeddings; fails on a degenerate reference."""
    reference = torch.as_tensor(np.asarray(reference)).float().flatten(1)
    assert ours.shape == reference.shape
    assert (reference.norm(dim=1) > 1e-6).all(), "reference embeddings are zero"
    reference = F.normalize(reference, dim=1)
    assert torch.cdist(reference, reference).fill_diagonal_(1).min() > 1e-3, "pictures collide"
    return (ours - reference).abs().max().item()


def root_error(excinfo) -> BaseException:
    """Our error, under Hydra's InstantiationException if `create_extractor` wrapped it."""
    err = excinfo.value
    while not isinstance(err, (MissingWeightsError, IncompatibleWeightsError)) and err.__cause__:
        err = err.__cause__
    return err


def nchw(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


# --- functional re-statements of the reference forwards (from the projects' sources) ---------

def _bn(x, sd, p, eps):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                        sd[f"{p}.bias"], False, 0.0, eps)


def iresnet_reference(sd: dict, x: torch.Tensor, eps: float) -> torch.Tensor:
    """arcface_torch backbones/iresnet.py IResNet.forward (MagFace's is the same, eps 2e-5)."""
    x = F.prelu(_bn(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1", eps), sd["prelu.weight"])
    for stage in range(1, 5):
        i = 0
        while f"layer{stage}.{i}.conv1.weight" in sd:
            p, stride = f"layer{stage}.{i}", 2 if i == 0 else 1
            out = F.conv2d(_bn(x, sd, f"{p}.bn1", eps), sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(_bn(out, sd, f"{p}.bn2", eps), sd[f"{p}.prelu.weight"])
            out = _bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn3", eps)
            if i == 0:
                x = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=2), sd, f"{p}.downsample.1", eps)
            x, i = out + x, i + 1
    x = F.linear(_bn(x, sd, "bn2", eps).flatten(1), sd["fc.weight"], sd["fc.bias"])
    return _bn(x, sd, "features", eps)


def vgg_reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """Caffe VGG-Face to relu7: 13 conv+ReLU (pool after conv1_2, 2_2, 3_3, 4_3, 5_3), fc6, fc7."""
    for layer in matconvnet_names().values():
        if layer.startswith("features."):
            x = F.relu(F.conv2d(x, sd[f"{layer}.weight"], sd[f"{layer}.bias"], padding=1))
            if int(layer.split(".")[1]) in (2, 7, 14, 21, 28):
                x = F.max_pool2d(x, 2, 2)
    x = F.relu(F.linear(x.flatten(1), sd["classifier.0.weight"], sd["classifier.0.bias"]))
    return F.relu(F.linear(x, sd["classifier.3.weight"], sd["classifier.3.bias"]))


# --- torch formats ------------------------------------------------------------------------------

def test_facenet_matches_facenet_pytorch(tmp_path):
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1
    from facenet_pytorch.models.mtcnn import fixed_image_standardization

    torch.manual_seed(0)
    # As published: the state dict carries the classifier head `logits.*`.
    net = randomize_norms(InceptionResnetV1(classify=True, num_classes=7))
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(net.state_dict(), path)
    ours = create_extractor("facenet", weights=str(path))
    # facenet-pytorch's pretrained path: head loaded, then used with classify=False.
    net.classify = False
    pics = pictures(2, 160)
    with torch.no_grad():
        reference = net(fixed_image_standardization(nchw(pics)))
    diff = max_diff(ours.embed(pics), reference)
    print(f"facenet max abs diff {diff:.2e}")
    assert diff < ATOL and ours.differentiable and ours.embedding_dim == 512


def test_iresnet_has_arcface_torch_layout():
    """Key names and shapes of arcface_torch's iresnet50 / iresnet100 (backbones/iresnet.py)."""
    with torch.device("meta"):
        r50, r100 = iresnet("r50").state_dict(), iresnet("r100").state_dict()
    # stem 7 keys; a block 18 (+6 with its downsample); bn2, fc, features 12.
    assert len(r50) == 7 + 4 * 24 + 20 * 18 + 12 and len(r100) == 7 + 4 * 24 + 45 * 18 + 12
    expected = {"conv1.weight": (64, 3, 3, 3), "prelu.weight": (64,),
                "layer1.0.bn1.running_var": (64,), "layer1.0.conv1.weight": (64, 64, 3, 3),
                "layer2.0.conv2.weight": (128, 128, 3, 3), "layer3.13.prelu.weight": (256,),
                "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                "layer4.0.downsample.1.num_batches_tracked": (), "bn2.weight": (512,),
                "fc.weight": (512, 512 * 7 * 7), "fc.bias": (512,), "features.running_mean": (512,)}
    for key, shape in expected.items():
        assert tuple(r50[key].shape) == shape, key
    assert "layer3.29.bn3.weight" in r100 and "layer3.14.bn1.weight" not in r50


def test_arcface_torch_backbone_matches_reference(tmp_path):
    torch.manual_seed(1)
    net = randomize_norms(IResNet(TINY))
    path = tmp_path / "backbone.pth"
    torch.save(net.state_dict(), path)  # arcface_torch: torch.save(backbone.module.state_dict())
    ours = create_extractor("arcface", weights=str(path), layers=TINY)
    pics = pictures(3, 112)
    # arcface_torch inference.py: RGB, img.div_(255).sub_(0.5).div_(0.5)
    reference = iresnet_reference(net.state_dict(), nchw(pics).div(255).sub(0.5).div(0.5), 1e-5)
    diff = max_diff(ours.embed(pics), reference)
    print(f"arcface (torch) max abs diff {diff:.2e}")
    assert diff < ATOL and ours.differentiable
    x = torch.rand(2, 3, 80, 90, requires_grad=True)  # any size: resized inside
    ours(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_magface_checkpoints_with_either_prefix(tmp_path):
    from torchvision import transforms

    torch.manual_seed(2)
    net = randomize_norms(IResNet(TINY, bn_eps=2e-5))
    sd = net.state_dict()
    head = torch.randn(512, 10)  # MagLinear's weight: not part of the extractor
    pics = pictures(2, 112)
    # MagFace gen_feat.py: cv2 BGR, ToTensor, Normalize(mean 0, std 1).
    to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.0] * 3, [1.0] * 3)])
    x = torch.stack([to_input(np.ascontiguousarray(p[..., ::-1])) for p in pics])
    reference = iresnet_reference(sd, x, 2e-5)
    for i, (prefix, head_key) in enumerate([("features.module.", "fc.weight"),
                                            ("module.features.", "module.fc.weight")]):
        path = tmp_path / f"magface_{i}.pth"
        torch.save({"epoch": 25, "arch": "iresnet100",
                    "state_dict": {prefix + k: v for k, v in sd.items()} | {head_key: head}}, path)
        ours = create_extractor("magface", weights=str(path), layers=TINY)
        diff = max_diff(ours.embed(pics), reference)
        print(f"magface ({prefix}) max abs diff {diff:.2e}")
        assert diff < ATOL
    raw = create_extractor("magface", weights=str(path), layers=TINY, normalize=False).embed(pics)
    assert torch.allclose(raw.norm(dim=1), reference.norm(dim=1), rtol=1e-4)  # quality kept


def test_vggface_both_state_dict_flavours(tmp_path):
    import torchvision

    with torch.device("meta"):
        tv = torchvision.models.vgg16().state_dict()
        own = VGGFace().state_dict()
    assert {k: v.shape for k, v in own.items()} == {
        k: v.shape for k, v in tv.items() if not k.startswith("classifier.6.")}
    torch.manual_seed(3)
    net = VGGFace(widths=(4, 4, 8, 8, 8), fc_dim=16)
    for m in net.modules():  # He init keeps the signal alive through 15 ReLU layers
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    sd = net.state_dict() | {"classifier.6.weight": torch.randn(5, 16), "classifier.6.bias": torch.zeros(5)}
    torch.save(sd, tmp_path / "caffe.pth")
    to_mcn = {v: k for k, v in matconvnet_names().items()}
    torch.save({f"{to_mcn[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v for k, v in sd.items()},
               tmp_path / "vgg_face_dag.pth")
    pics, mean_bgr = pictures(2, 224), torch.tensor([93.5940, 104.7624, 129.1863]).view(1, 3, 1, 1)
    kw = dict(widths=[4, 4, 8, 8, 8], fc_dim=16)
    caffe = create_extractor("vggface", weights=str(tmp_path / "caffe.pth"), **kw)
    mcn = create_extractor("vggface", weights=str(tmp_path / "vgg_face_dag.pth"), **kw)
    assert (caffe.channels, mcn.channels) == ("BGR", "RGB")
    bgr_ref = vgg_reference(sd, nchw(pics).flip(1) - mean_bgr)  # Caffe: BGR minus BGR mean
    rgb_ref = vgg_reference(sd, nchw(pics) - mean_bgr.flip(1))  # MatConvNet: RGB minus RGB mean
    diffs = max_diff(caffe.embed(pics), bgr_ref), max_diff(mcn.embed(pics), rgb_ref)
    print(f"vggface max abs diff caffe {diffs[0]:.2e} matconvnet {diffs[1]:.2e}")
    assert max(diffs) < ATOL


def test_clip_open_clip_checkpoint(tmp_path):
    import open_clip

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                           "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(4)
    path = tmp_path / "epoch_1.pt"  # an open_clip training checkpoint (DDP prefixes)
    sd = open_clip.CLIP(**cfg).state_dict()
    torch.save({"epoch": 1, "name": "tiny", "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    ours = create_extractor("clip", weights=str(path), model_cfg=cfg, force_quick_gelu=False)
    reference_model = open_clip.CLIP(**cfg).eval()
    open_clip.load_checkpoint(reference_model, str(path))
    transform = open_clip.image_transform(32, is_train=False)  # OpenAI mean/std by default
    pics = pictures(2, 32)
    with torch.no_grad():
        x = torch.stack([transform(Image.fromarray(p)) for p in pics])
        reference = reference_model.encode_image(x, normalize=True)
    diff = max_diff(ours.embed(pics), reference)
    print(f"clip max abs diff {diff:.2e}")
    assert diff < ATOL and hasattr(ours.backbone, "encode_text") and ours.embedding_dim == 16


def test_timm_backbone_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(5)
    sd = randomize_norms(timm.create_model("test_resnet", num_classes=10)).state_dict()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    ours = create_extractor("timm", model_name="test_resnet", weights=str(path))
    # timm's own loader and transform (crop_pct 1: the whole picture, as the extractor does).
    reference_model = timm.create_model("test_resnet", pretrained=True, num_classes=0,
                                        pretrained_cfg_overlay={"file": str(path)}).eval()
    transform = create_transform(**resolve_data_config({}, model=reference_model) | {"crop_pct": 1.0})
    pics = pictures(2, ours.input_size)
    with torch.no_grad():
        reference = reference_model(torch.stack([transform(Image.fromarray(p)) for p in pics]))
    diff = max_diff(ours.embed(pics), reference)
    print(f"timm max abs diff {diff:.2e}")
    assert diff < ATOL and ours.input_size == 160


# --- ONNX ---------------------------------------------------------------------------------------

def export(model: nn.Module, path, shape, dynamic_batch: bool = True):
    torch.onnx.export(model.eval(), (torch.rand(*shape),), str(path), dynamo=False,
                      input_names=["input.1"], output_names=["embedding"],
                      dynamic_axes={"input.1": {0: "None"}} if dynamic_batch else None)
    return path


def test_insightface_onnx_through_its_model_zoo(tmp_path):
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    torch.manual_seed(6)
    path = export(randomize_norms(IResNet(TINY)), tmp_path / "w600k_r50.onnx", (1, 3, 112, 112))
    model = get_model(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(model, ArcFaceONNX)
    ours = create_extractor("arcface", weights=str(path))
    pics = pictures(3, 112)
    reference = model.get_feat([np.ascontiguousarray(p[..., ::-1]) for p in pics])  # BGR, as cv2
    diff = max_diff(ours.embed(pics), reference)
    print(f"arcface (insightface onnx) max abs diff {diff:.2e}")
    assert diff < ATOL and not ours.differentiable
    out = ours(torch.rand(2, 3, 112, 112, requires_grad=True))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 512)


class NHWCNet(nn.Module):
    """A Keras-like export: NHWC input, as tf2onnx writes Fawkes' extractors."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 5, stride=4), nn.Linear(8 * 27 * 27, 32)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x.permute(0, 3, 1, 2))).flatten(1))


def test_onnx_layouts_and_preprocessing(tmp_path):
    import onnxruntime

    torch.manual_seed(7)
    pics = pictures(3, 112)
    # celeb1m: Fawkes' Extractor.predict(imgs) = l2_norm(model(imgs / 255.0)), RGB, NHWC.
    path = export(NHWCNet(), tmp_path / "extractor_2.onnx", (1, 112, 112, 3))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input.1": np.stack(pics).astype(np.float32) / 255.0})[0]
    ours = create_extractor("celeb1m", weights=str(path))
    diff = max_diff(ours.embed(pics), reference)
    print(f"celeb1m (onnx NHWC) max abs diff {diff:.2e}")
    assert diff < ATOL and (ours.layout, ours.input_size, ours.embedding_dim) == ("NHWC", 112, 32)
    # Any model: NCHW with the batch fixed at 1, BGR, [0, 255], mean/std from the config.
    path = export(nn.Sequential(nn.Conv2d(3, 4, 8, 8), nn.Flatten()), tmp_path / "b1.onnx",
                  (1, 3, 64, 64), dynamic_batch=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mean, std = np.array([90.0, 100.0, 110.0]), np.array([50.0, 60.0, 70.0])
    pics = pictures(3, 64)
    x = ((np.stack(pics)[..., ::-1] - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    reference = np.concatenate([session.run(None, {"input.1": x[i:i + 1]})[0] for i in range(3)])
    ours = create_extractor("onnx", weights=str(path), channels="BGR", mean=mean.tolist(),
                            std=std.tolist())
    diff = max_diff(ours.embed(pics), reference)
    print(f"onnx (NCHW, batch 1, BGR) max abs diff {diff:.2e}")
    assert diff < ATOL and ours.layout == "NCHW"


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_missing_weights_name_file_and_source(tmp_path, name):
    paths = OmegaConf.load(CONF_DIR / "paths" / "default.yaml")
    paths.weights_dir = str(tmp_path)
    with pytest.raises(Exception) as excinfo:
        create_extractor(name, paths=paths)
    err = root_error(excinfo)
    info = OmegaConf.load(CONF_DIR / "extractor" / f"{name}.yaml").info
    assert isinstance(err, MissingWeightsError) and isinstance(err, FileNotFoundError)
    assert str(tmp_path / CONFIGS[name]) in str(err) and info.weights in str(err)


def test_wrong_architecture_is_one_clear_error(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(IResNet(TINY, num_features=128).state_dict(), path)
    with pytest.raises(Exception) as excinfo:  # fc / features shapes differ
        create_extractor("arcface", weights=str(path), layers=TINY)
    err = str(root_error(excinfo))
    assert str(path) in err and "fc.weight: file (128, 25088) vs model (512, 25088)" in err
    with pytest.raises(Exception) as excinfo:  # r100 expects blocks the file lacks
        create_extractor("arcface", weights=str(path))
    err = root_error(excinfo)
    assert isinstance(err, IncompatibleWeightsError) and "missing keys [layer1.1." in str(err)
    with pytest.raises(Exception) as excinfo:  # another architecture altogether
        create_extractor("facenet", weights=str(path))
    err = str(root_error(excinfo))
    assert "InceptionResnetV1" in err and "conv2d_1a.conv.weight" in err and len(err) < 1500


def test_unreadable_files_are_one_clear_error(tmp_path):
    onnx_path = export(nn.Sequential(nn.Conv2d(3, 4, 8, 8), nn.Flatten()), tmp_path / "m.onnx",
                       (1, 3, 112, 112))
    data = onnx_path.read_bytes()
    for name in ("onnx", "arcface"):  # onnxruntime directly, and insightface's loader
        cut = tmp_path / f"cut_{name}.onnx"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(Exception) as excinfo:
            create_extractor(name, weights=str(cut))
        err = root_error(excinfo)
        assert isinstance(err, IncompatibleWeightsError) and str(cut) in str(err)
        assert "truncated" in str(err)
    pth = tmp_path / "cut.pth"
    torch.save(IResNet(TINY).state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(Exception) as excinfo:
        create_extractor("arcface", weights=str(pth), layers=TINY)
    assert "truncated" in str(root_error(excinfo))


def test_weights_only_refusal_says_how_to_opt_out(tmp_path):
    sd = IResNet(TINY, bn_eps=2e-5).state_dict()
    path = tmp_path / "magface_args.pth"  # checkpoints that pickle their argparse arguments
    torch.save({"args": argparse.Namespace(arch="iresnet100"),
                "state_dict": {"features.module." + k: v for k, v in sd.items()}}, path)
    with pytest.raises(Exception) as excinfo:
        create_extractor("magface", weights=str(path), layers=TINY)
    assert "weights_only=false" in str(root_error(excinfo))
    ours = create_extractor("magface", weights=str(path), layers=TINY, weights_only=False)
    assert ours.embed(pictures(1, 112)).shape == (1, 512)


@pytest.mark.slow
def test_clip_vit_b32_by_name_from_safetensors(tmp_path):
    """The default config: open_clip ViT-B-32 by name, weights from open_clip_model.safetensors."""
    import open_clip
    from safetensors.torch import save_file

    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    ours = create_extractor("clip", weights=str(path))
    assert (ours.input_size, ours.embedding_dim) == (224, 512)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        reference = model.eval().encode_image((x - ours.mean) / ours.std, normalize=True)
    assert (ours(x) - reference).abs().max().item() < ATOL
