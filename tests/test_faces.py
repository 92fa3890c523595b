"""Real photos in: MTCNN detection, each model's crop, the crop store, the scrape, bad photos.

The photos are the real ones `make test` installs: insightface's t1.jpg (a group of six) and
face-api's demo pictures (fetched with the dlib weights by `make weights-dlib`).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecure.data import Picture, folder_faces
from facecure.data.presets import celeba_faces
from facecure.faces import (
    Aligner,
    Face,
    FaceDetector,
    NoFace,
    Scrape,
    align,
    align_dataset,
    choose_face,
    crop_spec,
    move_cloak,
    warp,
)
from facecure.faces.scrape import cloak_delta
from facecure.paths import PROJECT_ROOT

FACE_API = Path(os.environ.get("FACECURE_CACHE") or PROJECT_ROOT / ".cache") / "face-api"
INSIGHTFACE = Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images"


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _demo(name: str) -> Path:
    path = FACE_API / "demo" / name
    if not path.is_file():
        pytest.skip(f"{path} missing: make weights-dlib fetches face-api's demo photos")
    return path


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture
def aligner(tmp_path, detector):
    return Aligner(tmp_path / "crops", detector)


def test_mtcnn_finds_the_group_and_keeps_the_largest(detector):
    img = _load(INSIGHTFACE / "t1.jpg")
    faces = detector.detect(img)
    assert len(faces) >= 6  # six people, the back row included
    chosen, note = choose_face(faces, *img.shape[:2])
    assert chosen.size == max(f.size for f in faces)
    assert note.startswith(f"{len(faces)} faces: kept the largest")
    central, _ = choose_face(faces, *img.shape[:2], keep="central")
    centre = np.array([img.shape[1] / 2, img.shape[0] / 2])
    dist = lambda f: np.linalg.norm([(f.box[0] + f.box[2]) / 2 - centre[0],  # noqa: E731
                                     (f.box[1] + f.box[3]) / 2 - centre[1]])
    assert dist(central) == min(dist(f) for f in faces)
    for f in faces:  # landmarks inside the box, eyes above the mouth
        lm = np.array(f.landmarks)
        assert (lm[:, 0] >= f.box[0] - 5).all() and (lm[:, 0] <= f.box[2] + 5).all()
        assert lm[:2, 1].mean() < lm[3:, 1].mean()


def test_arcface112_is_insightfaces_norm_crop(detector):
    from insightface.utils.face_align import norm_crop

    from facecure.faces import face_crop

    img = _load(INSIGHTFACE / "t1.jpg")
    face, _ = choose_face(detector.detect(img), *img.shape[:2])
    crop, matrix = align(img, face, crop_spec("arcface112"))
    assert crop.shape == (112, 112, 3) and matrix.shape == (2, 3)
    np.testing.assert_array_equal(crop, norm_crop(img, np.array(face.landmarks), 112))
    again, _ = face_crop(img, "arcface112", detector)  # the plain function: photo in, crop out
    np.testing.assert_array_equal(again, crop)
    with pytest.raises(NoFace, match="no face found"):
        face_crop(np.zeros((64, 64, 3), np.uint8), "dlib150", detector)


def test_loose_crop_is_the_widened_box():
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:60, 50:90] = 255  # the "face" box
    face = Face((50, 20, 90, 60), ((60, 30),) * 5, 0.99)
    crop, matrix = align(img, face, crop_spec("loose", size=60, margin=10))
    assert crop.shape == (60, 60, 3)
    # box 40 px + 10 each side = 60 px: scale 1, the box's corner lands at (10, 10)
    np.testing.assert_allclose(matrix, [[1, 0, -40], [0, 1, 0 - 10]], atol=1e-9)
    assert crop[10:50, 10:50].min() == 255 and crop[:8].max() == 0


def test_dlib150_crop_through_the_port_matches_dlibs_own_descriptor(detector):
    """FaceCure's pipeline (MTCNN box, dlib's 5-point predictor, its chip, the torch port) against
    dlib's (HOG box, the same predictor, compute_face_descriptor) on every face both find."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin is installed by make install")
    from facecure.extractors import create_extractor
    from facecure.faces.detect import _iou

    if not (FACE_API / "model").is_dir():
        pytest.skip("make weights-dlib fetches the dlib port's weights")
    models = Path(next(iter(importlib.util.find_spec("face_recognition_models")
                            .submodule_search_locations))) / "models"
    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    recognizer = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    port = create_extractor("dlib", model_dir=str(FACE_API / "model"))
    cosines = []
    for path in [INSIGHTFACE / "t1.jpg", *sorted((FACE_API / "demo").glob("sample*.jpg"))]:
        img = _load(path)
        faces = detector.detect(img)
        for box in hog(img, 0):
            rect = (box.left(), box.top(), box.right(), box.bottom())
            mine = max(faces, key=lambda f: _iou(f.box, rect), default=None)
            if mine is None or _iou(mine.box, rect) < 0.3:
                continue  # a face only one detector finds
            ref = np.array(recognizer.compute_face_descriptor(img, predictor(img, box)))
            crop, _ = align(img, mine, crop_spec("dlib150"))
            ours = port.embed([crop]).numpy()[0]
            cosines.append(ours @ ref / np.linalg.norm(ours) / np.linalg.norm(ref))
            # dlib calls two faces the same person below distance 0.6
            assert np.linalg.norm(ours - ref) < 0.2, (path.name, np.linalg.norm(ours - ref))
    print(f"dlib150 + port vs dlib's pipeline on {len(cosines)} faces: cosine min "
          f"{min(cosines):.4f}, median {np.median(cosines):.4f}")
    assert len(cosines) >= 15 and min(cosines) >= 0.99


def test_bad_photos_are_named_with_their_reason(tmp_path, detector):
    img = _load(_demo("sample2.jpg"))
    face, _ = choose_face(detector.detect(img), *img.shape[:2])
    x1, y1, x2, y2 = (int(v) for v in face.box)
    with pytest.raises(NoFace, match="no face found"):
        choose_face(detector.detect(np.full((200, 300, 3), 128, np.uint8)), 200, 300)
    cut = img[:, : int(x1 + 0.8 * (x2 - x1))]  # the face's right fifth is outside the photo
    faces = [f for f in detector.detect(cut) if f.box[2] > cut.shape[1] - 20]
    assert faces, "MTCNN should still find the cut face (its box reaches past the border)"
    with pytest.raises(NoFace, match="cut by the picture border"):
        choose_face(faces[:1], *cut.shape[:2])
    scale = 20 / (x2 - x1)  # the face now 20 px wide
    small = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * scale),
                                                    round(img.shape[0] * scale))))
    tiny = FaceDetector(min_face_size=12).detect(small)
    with pytest.raises(NoFace, match=r"below align.min_face_size=32"):
        choose_face(tiny, *small.shape[:2])


def _photo_folder(root: Path) -> Path:
    """Three identities of real photos, plus one with no face and one odd file."""
    people = {"group": [INSIGHTFACE / "t1.jpg", _demo("sample1.jpg")],
              "two": [_demo("sample2.jpg"), _demo("sample3.jpg"), _demo("sample4.jpg")],
              "three": [_demo("sample5.jpg"), _demo("sample6.jpg")]}
    for person, photos in people.items():
        (root / person).mkdir(parents=True)
        for i, photo in enumerate(photos):
            img = Image.open(photo).convert("RGB")
            img.thumbnail((640, 640))
            img.save(root / person / f"{i}.jpg", quality=95)
    Image.new("RGB", (120, 90), (90, 140, 200)).save(root / "three" / "sky.jpg")
    Image.fromarray(np.asarray(Image.open(root / "two" / "0.jpg"))).convert("CMYK").save(
        root / "two" / "cmyk.jpg")
    return root


def test_align_dataset_skips_names_and_reuses_the_store(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    photos = folder_faces(str(root), progress=False)
    detector = FaceDetector()
    aligner = Aligner(tmp_path / "crops", detector)
    crops = align_dataset(photos, crop_spec("arcface112"), aligner, progress=False)
    assert crops.aligned and set(crops.identities) == {"group", "two", "three"}
    reasons = {Path(s["path"]).name: s["reason"] for s in crops.skipped if "path" in s}
    assert reasons == {"sky.jpg": "no face found"}
    assert any("faces: kept the largest" in n["note"] for n in crops.notes)
    pic = crops.identities["two"][0]
    assert pic.load().shape == (112, 112, 3) and pic.origin is not None and pic.key != pic.origin.key
    passes = detector.calls
    assert passes == len(photos)  # once per photo (the CMYK one too)
    again = align_dataset(folder_faces(str(root), progress=False), crop_spec("dlib150"),
                          Aligner(tmp_path / "crops", detector), progress=False)
    assert detector.calls == passes  # another crop kind, a new aligner: no detector call
    assert again.identities["two"][0].load().shape == (150, 150, 3)
    # an identity left with too few faces is dropped and named
    strict = align_dataset(photos, crop_spec("arcface112"), aligner, progress=False)
    photos.min_pictures = 3
    strict = align_dataset(photos, crop_spec("arcface112"), aligner, progress=False)
    assert set(strict.identities) == {"two"}
    dropped = {s["identity"]: s["reason"] for s in strict.skipped if "identity" in s}
    assert "fewer than data.min_pictures=3" in dropped["three"]


def test_a_cloak_moves_between_crops_and_back_into_the_photo(tmp_path, aligner):
    img = _load(_demo("sample3.jpg"))
    photo = Picture.from_pixels("p", "x.jpg", img)
    a, b = crop_spec("arcface112"), crop_spec("loose", size=224, margin=120)  # b: a wide view
    clean_a, ma = aligner.crop(photo, a)
    clean_b, mb = aligner.crop(photo, b)
    rng = np.random.default_rng(0)
    delta = rng.uniform(-8, 8, clean_a.shape).astype(np.float32) / 255
    cloaked_a = np.clip(clean_a + delta * 255, 0, 255).round().astype(np.uint8)
    same = move_cloak(cloak_delta(cloaked_a, clean_a), ma, ma, clean_a)
    np.testing.assert_array_equal(same, cloaked_a)  # onto its own crop: unchanged
    moved = move_cloak(cloak_delta(cloaked_a, clean_a), ma, mb, clean_b)
    diff = np.abs(moved.astype(int) - clean_b).max(axis=2)
    centre, corner = diff[92:132, 92:132], diff[:10, :10]  # the arcface crop covers the centre only
    assert centre.mean() > 1 and corner.max() == 0
    assert np.abs(moved.astype(int) - clean_b).max() <= 9  # within the cloak's 8/255 (+ rounding)
    # pasted back with no recompression and aligned again by the same landmarks
    posted = Scrape(feather=0)(img, cloak_delta(cloaked_a, clean_a), ma)
    again = warp(posted, ma, (112, 112))
    assert np.abs(again.astype(int) - cloaked_a).mean() < 2.5  # two resamplings of the cloak
    jpeg = Scrape(jpeg_quality=50, resize=0.5)(img, cloak_delta(cloaked_a, clean_a), ma)
    assert jpeg.shape[:2] == (round(img.shape[0] * 0.5), round(img.shape[1] * 0.5))


def test_scrape_settings_are_checked():
    with pytest.raises(ValueError, match="jpeg_quality"):
        Scrape(jpeg_quality=0)
    with pytest.raises(ValueError, match="resize"):
        Scrape(resize=-1)
    assert Scrape(jpeg_quality=85).fingerprint != Scrape().fingerprint


def test_celeba_layout(tmp_path):
    root = tmp_path / "celeba"
    (root / "img_celeba").mkdir(parents=True)
    lines = []
    for n in range(3):
        for ident in (7, 9):
            name = f"{ident}{n:05d}.jpg"
            Image.new("RGB", (40, 40), (ident * 20, n * 60, 90)).save(root / "img_celeba" / name)
            lines.append(f"{name} {ident}")
    lines.append("000404.jpg 9")  # listed, not on disk
    (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    data = celeba_faces(str(root), min_pictures=3, progress=False)
    assert set(data.identities) == {"celeba_00007", "celeba_00009"} and not data.aligned
    assert any("not on disk" in s["reason"] for s in data.skipped)
    only = celeba_faces(str(root), identities=[9], min_pictures=3, progress=False)
    assert set(only.identities) == {"celeba_00009"}
    with pytest.raises(FileNotFoundError, match="img_celeba"):
        celeba_faces(str(tmp_path), progress=False)


def test_facescrub_lists_pick_the_listed_face(tmp_path, detector):
    import hashlib

    from facecure.data.presets import facescrub_faces

    root = tmp_path / "fs"
    (root / "Group_Photo").mkdir(parents=True)
    src = INSIGHTFACE / "t1.jpg"
    img = _load(src)
    faces = detector.detect(img)
    smallest = min(faces, key=lambda f: f.size)
    rows = ["name\timage_id\tface_id\turl\tbbox\tsha256"]
    for face_id, face in ((1, smallest), (2, faces[0])):
        path = root / "Group_Photo" / f"{face_id}.jpg"
        path.write_bytes(src.read_bytes())
        box = ",".join(str(round(v)) for v in face.box)
        rows.append(f"Group Photo\t{face_id}\t{face_id}\thttp://x\t{box}\t"
                    f"{hashlib.sha256(path.read_bytes()).hexdigest()}")
    rows.append("Group Photo\t3\t3\thttp://x\t1,1,50,50\t00")  # not downloaded
    (root / "facescrub_actors.txt").write_text("\n".join(rows) + "\n")
    data = facescrub_faces(str(root), progress=False)
    pics = data.identities["Group Photo"]
    assert [p.box is not None for p in pics] == [True, True]
    assert any(s["reason"] == "listed, not downloaded" for s in data.skipped)
    aligner = Aligner(tmp_path / "crops", detector, min_face_size=0)
    chosen, _ = aligner.face(pics[0])
    assert chosen.size == pytest.approx(smallest.size)  # the listed box, not the largest face


def test_a_real_photo_run_records_what_it_skipped(compose_cfg, tmp_path):
    """A whole run on real photos with the dlib port: detection and alignment inside the run,
    the photo without a face named in skipped.json and in the run record."""
    from facecure.app import run
    from facecure.results import read_results

    if not (FACE_API / "model").is_dir():
        pytest.skip("make weights-dlib fetches the dlib port's weights")
    root = _photo_folder(tmp_path / "photos")
    out = tmp_path / "run"
    run(compose_cfg("data=folder", f"data.root={root}", "extractor=dlib",
                    f"extractor.model_dir={FACE_API / 'model'}", "attack=noise", "n_attackers=2",
                    "progress=false", f"+run_dir={out}"))
    skipped = json.loads((out / "skipped.json").read_text())
    assert [Path(s["path"]).name for s in skipped] == ["sky.jpg"]
    records = read_results(out / "results.jsonl")
    run_record = records[0]
    assert run_record["skipped"] == skipped and run_record["crop"]["kind"] == "dlib150"
    assert run_record["notes"] and run_record["lost"] == []
    cloaked = [r for r in records if r["kind"] == "attacker" and r["attack"] == "noise"]
    assert len(cloaked) == 2 and all(r["n_perturbed"] > 0 for r in cloaked)
    # the cloak was made on the 150 px crop and kept at its size: L-inf is the noise's 8/255
    assert all(r["budget"]["linf_max"] <= 8 / 255 + 1 / 255 for r in cloaked)


CELEBA150 = PROJECT_ROOT.parent / "shared" / "faces" / "celeba150"


@pytest.mark.slow
def test_dlib_on_real_celeba_photos(compose_cfg, tmp_path):
    """The first 30 identities of ../shared/faces/celeba150 (in-the-wild photos), clean 1-NN
    with the dlib port on its dlib150 crops. The full 150-identity figure (94.7%, dlib's own
    pipeline 97.1%) is in docs/real-faces.md; scripts/dlib_reference.py measures both."""
    if not CELEBA150.is_dir():
        pytest.skip(f"{CELEBA150} is not on this machine (CelebA, research use: see "
                    "docs/real-faces.md for how to point data.root at your own copy)")
    if not (FACE_API / "model").is_dir():
        pytest.skip("make weights-dlib fetches the dlib port's weights")
    from facecure.app import run
    from facecure.results import read_results

    root = tmp_path / "celeba30"
    root.mkdir()
    for folder in sorted(CELEBA150.iterdir())[:30]:
        (root / folder.name).symlink_to(folder)
    out = tmp_path / "run"
    run(compose_cfg("data=folder", f"data.root={root}", "extractor=dlib",
                    f"extractor.model_dir={FACE_API / 'model'}", "attack=none", "n_attackers=5",
                    "progress=false", f"+run_dir={out}"))
    records = read_results(out / "results.jsonl")
    clean = next(r for r in records if r["kind"] == "aggregate")
    print(f"dlib on 30 CelebA identities: clean accuracy {clean['clean_accuracy']:.3f}, "
          f"{len(records[0]['skipped'])} photos skipped")
    assert clean["clean_accuracy"] >= 0.9
    assert all("reason" in s for s in records[0]["skipped"])


@pytest.mark.parametrize("surrogate_crop", ["arcface112", "dlib150", "none"])
def test_the_store_cloaks_the_surrogates_crop_and_hands_the_trainer_its_own(tmp_path, aligner,
                                                                            surrogate_crop):
    """Trainer crop dlib150; the attack's surrogates use `surrogate_crop`. The stored twin is the
    cloaked surrogate crop at its own size; the trainer's twin is its dlib150 crop, cloaked."""
    from facecure.attacks.noise import RandomNoise
    from facecure.attacks.store import PerturbedStore

    photos = folder_faces(str(_photo_folder(tmp_path / "photos")), progress=False)
    crops = align_dataset(photos, crop_spec("dlib150"), aligner, progress=False)
    pictures = crops.identities["two"]
    attack = RandomNoise(epsilon=8 / 255, image_size=112, seed=0)
    attack.crop_spec = crop_spec(surrogate_crop)
    store = PerturbedStore(tmp_path / "perturbed", 8, "cpu", None, aligner)
    twins, budgets = store.perturb_pictures(attack, pictures, progress=False)
    assert len(twins) == len(pictures) and store.lost == []
    for p, twin, budget in zip(pictures, twins, budgets):
        assert twin.load().shape == (150, 150, 3) and twin.crop == "dlib150"
        change = np.abs(twin.load().astype(int) - p.load()).max()
        assert 0 < change <= 9  # 8/255, resampled and rounded
        assert budget["linf"] <= 8 / 255 + 1e-6
    stored = sorted((tmp_path / "perturbed" / attack.fingerprint).glob("*.png"))
    size = {"arcface112": (112, 112), "dlib150": (150, 150), "none": None}[surrogate_crop]
    if size:
        assert {Image.open(f).size for f in stored} == {size}
    # posted and recompressed: the trainer detects the scraped photo again
    scraped = PerturbedStore(tmp_path / "perturbed", 8, "cpu", None, aligner,
                             Scrape(jpeg_quality=85))
    again, _ = scraped.perturb_pictures(attack, pictures, progress=False)
    assert len(again) + len(scraped.lost) == len(pictures)
    assert all(t.load().shape == (150, 150, 3) and t.key not in {p.key for p in pictures}
               for t in again)


def test_a_scrape_on_face_crops_is_refused(compose_cfg, tmp_path):
    from facecure.app import run

    with pytest.raises(ValueError, match="scrape=jpeg85 pastes cloaks back"):
        run(compose_cfg("scrape=jpeg85", "attack=noise", "data.n_identities=4",
                        "data.pictures_per_identity=3", "data.image_size=32", "n_attackers=1",
                        "progress=false", f"+run_dir={tmp_path / 'run'}"))
