"""attack=from_dir and attack=fawkes_cli: official tools' outputs matched back to the originals."""
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

from facecure.app import run
from facecure.attacks import FawkesCLI, FawkesNotInstalled, FromDir, PerturbedStore
from facecure.attacks.twins import MissingTwins
from facecure.data import folder_faces, synthetic_faces
from facecure.data.dataset import Picture
from facecure.results import read_results

NAMES = {"fawkes": "{stem}_high_cloaked.png", "lowkey": "{stem}_attacked.png",
         "mirror": "{stem}.png"}


def cloak(pixels: np.ndarray, delta: int) -> np.ndarray:
    """A perturbation of exactly `delta` levels everywhere, away from the clipping ends."""
    x = pixels.astype(int)
    return np.where(x < 128, x + delta, x - delta).astype(np.uint8)


def export_faces(root: Path, n_identities=3, n_pictures=3, size=24, suffix=".jpg") -> Path:
    """A folder data set `root/<identity>/img_00k<suffix>` from synthetic renders."""
    faces = synthetic_faces(n_identities, n_pictures, size, progress=False)
    for identity, pictures in faces.identities.items():
        (root / identity).mkdir(parents=True)
        for k, p in enumerate(pictures):
            Image.fromarray(p.load()).save(root / identity / f"img_{k:03d}{suffix}")
    return root


def write_twins(pictures, out: Path, pattern: str, delta: int, skip=()) -> dict:
    """The tool's outputs under out/<identity>/; returns {(identity, name): pixels written}."""
    written = {}
    for p in pictures:
        if p.name in skip:
            continue
        pixels = cloak(p.load(), delta)
        (out / p.identity).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out / p.identity / pattern.format(stem=Path(p.name).stem))
        written[p.identity, p.name] = pixels
    return written


def all_pictures(root: Path) -> list[Picture]:
    return [p for ps in folder_faces(str(root), progress=False).identities.values() for p in ps]


@pytest.mark.parametrize("declared", ["explicit", "auto"])
@pytest.mark.parametrize("naming", ["fawkes", "lowkey", "mirror"])
def test_round_trip_serves_what_is_on_disk_and_records_budget(tmp_path, naming, declared):
    faces = export_faces(tmp_path / "faces")
    pictures = all_pictures(faces)
    # Fawkes writes its outputs next to the originals; the other tools into a tree of their own.
    out = faces if naming == "fawkes" else tmp_path / "out"
    written = write_twins(pictures, out, NAMES[naming], delta=3)
    mode = "high" if naming == "fawkes" else "any"
    attack = FromDir(str(out), naming=naming if declared == "explicit" else "auto", mode=mode)
    assert attack.index.naming == naming
    assert attack.report(pictures) == {"missing": [], "orphans": [], "matched": len(pictures)}

    requested = pictures[1:7]  # a subset, as the run asks for the attackers' train pictures
    for p, provided in zip(requested, attack.provide(requested)):
        np.testing.assert_array_equal(provided, written[p.identity, p.name])
    store = PerturbedStore(tmp_path / "store")
    stored, budgets = store.perturb_pictures(attack, requested, progress=False)
    assert [(p.identity, p.name) for p in stored] == [(p.identity, p.name) for p in requested]
    for p, s in zip(requested, stored):
        np.testing.assert_array_equal(s.load(), written[p.identity, p.name])
    assert all(b["linf"] == pytest.approx(3 / 255, abs=1e-6) and b["dssim"] > 0 for b in budgets)


def test_changed_outputs_are_ingested_again(tmp_path):
    faces = export_faces(tmp_path / "faces", n_identities=2, n_pictures=2)
    pictures = all_pictures(faces)
    write_twins(pictures, tmp_path / "out", NAMES["lowkey"], delta=3)
    store = PerturbedStore(tmp_path / "store")
    before = FromDir(str(tmp_path / "out"), naming="lowkey")
    _, budgets = store.perturb_pictures(before, pictures, progress=False)
    write_twins(pictures, tmp_path / "out", NAMES["lowkey"], delta=5)  # the tool ran again
    for path in (tmp_path / "out").rglob("*.png"):  # later, even on a coarse file-system clock
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))
    after = FromDir(str(tmp_path / "out"), naming="lowkey")
    assert after.fingerprint != before.fingerprint and str(after.root) in str(after.params())
    _, budgets = store.perturb_pictures(after, pictures, progress=False)
    assert all(b["linf"] == pytest.approx(5 / 255, abs=1e-6) for b in budgets)


def test_mismatched_folder_names_missing_twins_and_orphans(tmp_path, caplog):
    faces = export_faces(tmp_path / "faces")
    pictures = all_pictures(faces)
    out = tmp_path / "out"
    write_twins(pictures, out, NAMES["fawkes"], delta=2, skip={"img_001.jpg"})
    ghost = f"{pictures[-1].identity}/ghost_high_cloaked.png"
    Image.fromarray(cloak(pictures[1].load(), 2)).save(out / ghost)
    (out / pictures[0].identity / "img_000_low_cloaked.png").write_bytes(b"")  # other mode: ignored
    attack = FromDir(str(out), naming="auto", mode="high")
    with caplog.at_level(logging.WARNING):
        found = attack.report(pictures)
    missing = [f"{p.identity}/img_001.jpg" for p in pictures if p.name == "img_001.jpg"]
    assert found == {"missing": missing, "orphans": [ghost], "matched": len(pictures) - 3}
    assert "ghost_high_cloaked.png" in caplog.text
    with pytest.raises(MissingTwins) as err:
        attack.provide(pictures)
    message = str(err.value)
    assert all(m in message for m in missing)
    assert "naming=fawkes" in message and "_high_cloaked.png" in message and str(out) in message
    assert len(attack.provide(pictures[:1])) == 1  # what is there is still served


def test_missing_list_is_cut_after_twenty(tmp_path):
    (tmp_path / "out").mkdir()
    rng = np.random.default_rng(0)
    pictures = [Picture.from_pixels("ann", f"img_{k:03d}.jpg",
                                    rng.integers(0, 255, (16, 16, 3), np.uint8)) for k in range(25)]
    with pytest.raises(MissingTwins, match=r"25 of the 25 .*img_019\.jpg and 5 more"):
        FromDir(str(tmp_path / "out"), naming="lowkey").provide(pictures)


FAKE_FAWKES = f"""#!{sys.executable}
# Mimics the official `fawkes` command line: cloaks every picture directly in -d DIR (skipping
# outputs) and writes <stem>_<mode>_cloaked.<format> next to it. Pictures named noface* get no
# output (Fawkes finds no face); a picture named crash* makes it fail like a TensorFlow error.
import argparse, glob, os, sys
import numpy as np
from PIL import Image
parser = argparse.ArgumentParser()
parser.add_argument("--directory", "-d")
parser.add_argument("--mode", "-m", default="low")
parser.add_argument("--batch-size", type=int, default=1)
parser.add_argument("--format", default="png")
args = parser.parse_args()
with open(os.path.join(os.path.dirname(__file__), "calls.log"), "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
for path in sorted(glob.glob(os.path.join(args.directory, "*"))):
    name = os.path.basename(path)
    if "_cloaked" in name or name.startswith("noface"):
        continue
    if name.startswith("crash"):
        sys.exit("Traceback (most recent call last):\\nResourceExhaustedError: OOM in fake fawkes")
    x = np.asarray(Image.open(path).convert("RGB")).astype(int)
    x = np.where(x < 128, x + 2, x - 2).astype(np.uint8)
    out = "{{}}_{{}}_cloaked.{{}}".format(".".join(path.split(".")[:-1]), args.mode, args.format)
    Image.fromarray(x).save(out)
"""


@pytest.fixture
def fake_fawkes(tmp_path):
    program = tmp_path / "bin" / "fawkes"
    program.parent.mkdir()
    program.write_text(FAKE_FAWKES)
    program.chmod(0o755)
    return program


def test_fawkes_cli_runs_the_program_per_identity_and_ingests_its_outputs(tmp_path, fake_fawkes):
    """The official Fawkes is not installable here (TensorFlow of its era, no internet), so a
    fake `fawkes` with the official command line and output naming stands in for it; our real
    subprocess call, temporary folders and output matching run unchanged."""
    pictures = all_pictures(export_faces(tmp_path / "faces", n_identities=2))
    attack = FawkesCLI(program=str(fake_fawkes), mode="mid", fawkes_batch_size=2)
    store = PerturbedStore(tmp_path / "store")
    stored, budgets = store.perturb_pictures(attack, pictures, progress=False)
    for p, s in zip(pictures, stored):
        np.testing.assert_array_equal(s.load(), cloak(p.load(), 2))
    assert all(b["linf"] == pytest.approx(2 / 255, abs=1e-6) for b in budgets)
    calls = (fake_fawkes.parent / "calls.log").read_text().splitlines()
    assert len(calls) == 2  # one run per user, as Fawkes is meant to be used
    assert all("--mode mid --batch-size 2 --format png" in c for c in calls)


@pytest.mark.parametrize("name, error, texts", [
    ("noface_0.jpg", MissingTwins, ["/noface_0.jpg", "1 of the 4", "detects no face"]),
    ("crash_0.jpg", RuntimeError, ["exit 1", "ResourceExhaustedError: OOM in fake fawkes"])])
def test_fawkes_cli_failures_are_explained(tmp_path, fake_fawkes, name, error, texts):
    faces = export_faces(tmp_path / "faces", n_identities=2, n_pictures=2)
    odd = sorted(faces.iterdir())[0]
    shutil.move(odd / "img_000.jpg", odd / name)
    with pytest.raises(error) as err:
        FawkesCLI(program=str(fake_fawkes)).provide(all_pictures(faces))
    assert all(t in str(err.value) for t in texts), str(err.value)


def test_fawkes_cli_not_installed_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    pictures = [Picture.from_pixels("ann", "a.jpg", np.zeros((16, 16, 3), np.uint8))]
    with pytest.raises(FawkesNotInstalled) as err:
        FawkesCLI().provide(pictures)
    message = str(err.value)
    for needed in ("not installed", "pip install fawkes", "attack.program=", "attack=from_dir"):
        assert needed in message


@pytest.mark.parametrize("attack", ["from_dir", "fawkes_cli"])
def test_tiny_run_ingests_official_outputs(compose_cfg, tmp_path, fake_fawkes, attack):
    """A whole run on a folder data set, with outputs made beforehand (from_dir: twins of every
    picture, as a user would run Fawkes on the whole folder) or by the fake `fawkes` (see above)."""
    faces = export_faces(tmp_path / "faces", n_identities=8, n_pictures=5, size=32, suffix=".png")
    write_twins(all_pictures(faces), tmp_path / "fawkes_out", NAMES["fawkes"], delta=2)
    label = "fawkes v1.0 high (official)"
    chosen = {"from_dir": [f"attack.root={tmp_path / 'fawkes_out'}", "attack.mode=high"],
              "fawkes_cli": [f"attack.program={fake_fawkes}"]}[attack]
    generic = [o for o in TINY if not o.startswith(("data.", "attack."))]
    out = tmp_path / "run"
    run(compose_cfg(*generic, "data=folder", f"data.root={faces}", f"attack={attack}", *chosen,
                    f"attack.label='{label}'", f"+run_dir={out}"))
    cloaked = [r for r in read_results(out / "results.jsonl")
               if r["kind"] == "attacker" and r["attack"] == attack]
    assert len(cloaked) == 2 and all(r["attack_mode"] == "high" for r in cloaked)
    assert all(r["n_perturbed"] > 0 for r in cloaked)
    assert all(r["budget"]["linf_max"] == pytest.approx(2 / 255, abs=1e-6) for r in cloaked)
    assert label in (out / "config.yaml").read_text()
