import numpy as np
import pytest
from PIL import Image

from facecure.data import (
    UnreadablePicture,
    choose_attackers,
    folder_faces,
    load_picture,
    split_dataset,
    synthetic_faces,
)
from facecure.data.synthetic import identity_params, render_identity


def test_renderer_is_deterministic_and_identities_are_stable():
    a = render_identity(3, "evaluation", 5, 4, 48)
    b = render_identity(3, "evaluation", 5, 4, 48)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (48, 48, 3) and a[0].dtype == np.uint8
    assert not np.array_equal(a[0], a[1])  # pictures of one identity vary
    small = synthetic_faces(3, 2, 32, seed=3, progress=False)
    large = synthetic_faces(6, 4, 32, seed=3, progress=False)
    for name, pics in small.identities.items():  # identity i is the same whatever the size
        assert [p.key for p in pics] == [p.key for p in large.identities[name][:2]]


def test_populations_are_disjoint_streams():
    evaluation = identity_params(0, "evaluation", 0)
    public = identity_params(0, "public", 0)
    assert evaluation.face_w != public.face_w


def test_split_is_seeded_70_30_with_one_of_each():
    data = synthetic_faces(6, 10, 32, progress=False)
    s1, s2 = split_dataset(data, 0), split_dataset(data, 0)
    assert {k: [p.key for p in v] for k, v in s1.train.items()} == \
           {k: [p.key for p in v] for k, v in s2.train.items()}
    assert all(len(s1.train[i]) == 7 and len(s1.test[i]) == 3 for i in s1.identities)
    other = split_dataset(data, 1)
    assert any([p.key for p in other.train[i]] != [p.key for p in s1.train[i]] for i in s1.identities)
    tiny = synthetic_faces(2, 2, 32, progress=False)
    st = split_dataset(tiny, 0)
    assert all(len(st.train[i]) == 1 and len(st.test[i]) == 1 for i in st.identities)


def test_attackers_are_seeded_and_bounded():
    ids = [f"id{i}" for i in range(30)]
    assert choose_attackers(ids, 5, 0) == choose_attackers(ids, 5, 0)
    assert choose_attackers(ids, 5, 0) != choose_attackers(ids, 5, 1)
    assert "id3" not in choose_attackers(ids, 29, 0, exclude={"id3"})
    with pytest.raises(ValueError, match="n_attackers"):
        choose_attackers(ids, 31, 0)


def make_odd_folder(root):
    """A folder data set with every kind of awkward picture."""
    rng = np.random.default_rng(0)
    rgb = lambda: rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)  # noqa: E731
    alice, bob, carol = root / "alice", root / "bob", root / "carol"
    for d in (alice, bob, carol):
        d.mkdir(parents=True)
    Image.fromarray(rgb()).convert("CMYK").save(alice / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(alice / "deep16.png")
    Image.fromarray(np.dstack([rgb(), np.full((40, 36), 128, np.uint8)]), "RGBA").save(alice / "alpha.png")
    Image.fromarray(rgb()[..., 0]).save(alice / "gray.png")
    (alice / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (alice / "notes.txt").write_text("not a picture")
    for i in range(3):
        Image.fromarray(rgb()).save(bob / f"b{i}.png")
    Image.fromarray(rgb()).save(carol / "only.png")
    return root


def test_odd_pictures_are_converted_and_bad_ones_named(tmp_path):
    root = make_odd_folder(tmp_path / "faces")
    for name in ("cmyk.jpg", "deep16.png", "alpha.png", "gray.png"):
        arr = load_picture(root / "alice" / name)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    deep = load_picture(root / "alice" / "deep16.png")
    assert deep.max() > 100  # 16-bit values scaled down, not clipped to white
    with pytest.raises(UnreadablePicture, match="broken.jpg"):
        load_picture(root / "alice" / "broken.jpg")
    data = folder_faces(str(root), progress=False)
    assert set(data.identities) == {"alice", "bob"}
    assert len(data.identities["alice"]) == 4
    skipped = {s.get("path", s.get("identity")) for s in data.skipped}
    assert str(root / "alice" / "broken.jpg") in skipped
    assert str(root / "alice" / "notes.txt") in skipped
    assert "carol" in skipped


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-folder per identity"):
        folder_faces(str(tmp_path / "nowhere"))
