"""`facecure audit` on real photos with a real model (dlib: the fastest), and its bad inputs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecure.audit import AuditInput, run_audit, write_report


def person_folders(real_photos: Path, tmp: Path, who: int = 0, n_posted: int = 4,
                   leave_out: tuple[int, ...] = ()):
    """Identity `who` of the test photos as the audited person (posted, probe), the others but
    `leave_out` as distractors (linked, never copied out of the shared folder)."""
    ids = sorted(real_photos.iterdir())
    me = sorted(ids[who].iterdir())
    posted, probe, dist = tmp / "posted", tmp / "probe", tmp / "distractors"
    for folder in (posted, probe, dist):
        folder.mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(me):
        (posted if i < n_posted else probe).joinpath(photo.name).symlink_to(photo.resolve())
    for j, other in enumerate(ids):
        if j != who and j not in leave_out:
            (dist / other.name).symlink_to(other.resolve())
    return posted, probe, dist


def audit(posted, probe, dist, cache_dir, clean=None, **kw) -> dict:
    return run_audit(AuditInput(str(posted), str(probe), str(clean) if clean else None, str(dist),
                                models=["dlib"], scrapes=["as posted", "jpeg70"], progress=False,
                                overrides=[f"paths.cache_dir={cache_dir}"], **kw))


def test_audit_of_unprotected_photos_writes_a_readable_report(real_photos, real_models,
                                                              cache_dir, tmp_path):
    posted, probe, dist = person_folders(real_photos, tmp_path)
    result = audit(posted, probe, dist, cache_dir, clean=posted)
    (model,) = result["models"]
    assert model["name"] == "dlib" and model["date"] == "2017-02"
    conds = {c["condition"]: c for c in model["conditions"]}
    assert set(conds) == {"protected, as posted", "protected, jpeg70", "unprotected"}
    same = conds["protected, as posted"]
    # --clean is the posted folder itself: the two conditions are the same search.
    assert same["rank1"] == conds["unprotected"]["rank1"] and same["n_probes"] == 2
    assert all(b["dssim"] == 0 and b["linf"] == 0 for b in result["budgets"])
    # Rank-k never below rank-1, TPIR never above it (a threshold only removes answers).
    assert same["rank_k"]["5"] >= same["rank1"] >= same["tpir"]["fpir1e-2"] >= same["tpir"]["fpir1e-3"]
    out = tmp_path / "report"
    report = write_report(result, out, "facecure audit ...")
    text = report.read_text()
    assert "Nothing left this machine" in text and "by dlib (2017-02)" in text
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["uploaded"] is False
    assert {"name", "date", "rank1", "rank_k", "tpir"} <= set(verdict["models"][0])
    # Numbers and one chart: no photo or crop is written beside the report.
    assert sorted(p.name for p in out.iterdir()) == ["audit.json", "report.md", "verdict.json",
                                                    "verdict.png"]


def test_probe_of_someone_else_and_two_people_are_named(real_photos, real_models, cache_dir,
                                                        tmp_path):
    # Persons 1 and 2 stay out of the distractors: strangers to the gallery.
    posted, _, dist = person_folders(real_photos, tmp_path / "a", who=0, leave_out=(1, 2))
    _, other_probe, _ = person_folders(real_photos, tmp_path / "b", who=1)
    result = audit(posted, other_probe, dist, cache_dir, clean=posted)
    assert any("someone else" in n for n in result["notes"])
    # Originals of two people (the person's and another's) behind one posted folder.
    mixed = tmp_path / "mixed"
    shutil.copytree(posted, mixed, symlinks=True)
    for photo in sorted((real_photos / sorted(p.name for p in real_photos.iterdir())[2]).iterdir())[:3]:
        (mixed / f"x_{photo.name}").symlink_to(photo.resolve())
    _, probe, _ = person_folders(real_photos, tmp_path / "c", who=0)
    result = audit(mixed, probe, dist, cache_dir, clean=mixed)
    assert any("more than one person" in n for n in result["notes"])


def test_bad_input_gets_a_verdict_or_a_message(real_photos, real_models, cache_dir, tmp_path):
    posted, probe, dist = person_folders(real_photos, tmp_path)
    # A posted folder of one photo: a verdict, with a note that it rests on one picture.
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(posted.iterdir())[0]
    (one / first.name).symlink_to(first.resolve())
    result = audit(one, probe, dist, cache_dir)
    assert result["models"][0]["conditions"][0]["n_posted"] == 1
    assert any("one posted photo" in n for n in result["notes"])
    # A folder with no face (noise, and a corrupt file): posted -> "no face" verdict;
    # probe -> a clear error. Nothing in the folders is touched.
    noface = tmp_path / "noface"
    noface.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(noface / "n.png")
    (noface / "broken.jpg").write_bytes(b"not a jpeg")
    result = audit(noface, probe, dist, cache_dir)
    cond = result["models"][0]["conditions"][0]
    assert cond["n_posted"] == 0 and cond["without_face"]
    assert any("broken.jpg" in s["path"] for s in result["unreadable"])
    report = write_report(result, tmp_path / "r", "x").read_text()
    assert "no face left to search" in report
    with pytest.raises(ValueError, match="no face found in any probe photo"):
        audit(posted, noface, dist, cache_dir)
    assert sorted(p.name for p in noface.iterdir()) == ["broken.jpg", "n.png"]
    # The command line: a clear message and exit status 2, no traceback.
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "facecure.cli", "audit", "--posted", str(empty),
                           "--probe", str(probe), "--distractors", str(dist), "--models", "dlib",
                           f"paths.cache_dir={cache_dir}"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no readable photo" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_adaptive_audit_uses_the_stored_robust_model_and_detector(compose_cfg, real_photos,
                                                                  real_models, cache_dir, tmp_path):
    """A tiny real-world adaptive and detection run store their robust model and detector;
    --adaptive scores the person's photos with them (nothing trained by the audit)."""
    from real_photos import N_PHOTOS

    from facecure.app import run

    sweep = tmp_path / "sweep"
    common = ["world=real", "attack=fawkes_v10", "attack.mode=low", "attack.steps=2",
              f"data.root={real_photos}", f"data.min_pictures={N_PHOTOS - 2}", "n_attackers=1",
              "progress=false", "scale.public_fraction=0.5"]  # 2 or 3 public users: a detector needs 2
    run(compose_cfg(*common, "experiment=adaptive", "defense=robust", "defense.steps=2",
                    "defense.batch_size=4", "defense.checkpoint_every=2",
                    "defense.train_attacks=[fawkes_v10/low]", f"+run_dir={sweep / 'adaptive' / '0'}"))
    low = "{name:fawkes_v10,mode:low,steps:2}"
    run(compose_cfg(*common, "experiment=detection", "defense.model_name=mobilenetv2_035",
                    "defense.epochs=1", "defense.batch_size=8", "defense.input_size=32",
                    "defense.n_train_users=1", "defense.n_test_users=1",
                    f"defense.train_attacks=[{low}]", f"defense.test_attacks=[{low}]",
                    f"+run_dir={sweep / 'detection' / '0'}"))
    posted, probe, dist = person_folders(real_photos, tmp_path)
    result = audit(posted, probe, dist, cache_dir, clean=posted, adaptive=str(sweep))
    names = [m["name"] for m in result["models"]]
    assert names == ["dlib", "mobileface+robust"]
    assert result["models"][1]["adaptive"] == "robust"
    (det,) = result["detectors"]
    assert det["train_attack"] == "fawkes_v10/low" and 0 <= det["auc_on_own_attack"] <= 1
    assert det["posted"]["n"] == 4 and 0 <= det["posted"]["flagged"] <= 1
    report = write_report(result, tmp_path / "r", "x").read_text()
    assert "fine-tuned on public cloaks by the adaptive trainer" in report
    assert "| fawkes_v10/low |" in report
    # Without the experiments' stores: one clear message naming the experiment to run.
    with pytest.raises(FileNotFoundError, match="experiment=adaptive world=real"):
        audit(posted, probe, dist, cache_dir, adaptive=str(tmp_path / "nothing"))


def test_a_picture_under_two_identities_leaves_the_distractors():
    from facecure.audit.run import drop_cross_identity_duplicates
    from facecure.data.dataset import Picture

    def pic(identity, name, key):
        return Picture(identity, name, key)

    ids = {"a": [pic("a", "1.jpg", "k1"), pic("a", "2.jpg", "k2")],
           "b": [pic("b", "3.jpg", "k1"), pic("b", "4.jpg", "k4")],
           "c": [pic("c", "5.jpg", "k5"), pic("c", "6.jpg", "k5")]}  # a duplicate within c stays
    assert drop_cross_identity_duplicates(ids) == ["a/1.jpg", "b/3.jpg"]
    assert [p.name for p in ids["a"]] == ["2.jpg"] and len(ids["c"]) == 2
