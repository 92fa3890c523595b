"""A small real-world run: world=real's roles, real photos (detected and aligned), the real
models as trainer and surrogate. The full experiments are `make reproduce-real`.

The photos: six identities of ../shared/faces/celeba150 where it exists; elsewhere the faces
of the photos that `make test` installs (face-api's demo, insightface's samples), each face
an identity whose "photos" are jittered re-framings of its one photo (a pipeline check, not
a measurement)."""
import json

from real_photos import N_PHOTOS

from facecure.results import read_results


def test_a_small_real_world_baseline(compose_cfg, real_photos, real_models, tmp_path):
    from facecure.app import run
    from facecure.report import build_report

    common = ["world=real", "experiment=baseline", "attack=fawkes_v10", "attack.mode=low",
              "attack.steps=2", f"data.root={real_photos}", f"data.min_pictures={N_PHOTOS - 2}",
              "n_attackers=2", "progress=false"]
    # The oldest era (dlib, on its own chip), then the standard model (the paper's WebFace:
    # mobileface here), which is the attack's surrogate.
    for extractor in ("dlib", "mobileface"):
        run(compose_cfg(*common, f"extractor={extractor}", f"+run_dir={tmp_path / extractor}"))
    records = {e: read_results(tmp_path / e / "results.jsonl") for e in ("dlib", "mobileface")}
    run_record = records["dlib"][0]
    assert run_record["world"] == "real" and run_record["crop"]["kind"] == "dlib150"
    assert run_record["attack_crop"]["kind"] == "arcface112"  # mobileface's, moved onto dlib's
    for extractor, role, white in (("dlib", None, False), ("mobileface", "webface", True)):
        attacked = [r for r in records[extractor] if r["kind"] == "attacker"
                    and r["attack"] == "fawkes_v10"]
        assert len(attacked) == 2
        assert {(r["world"], r["extractor_role"], r["white_box"]) for r in attacked} == \
            {("real", role, white)}
        assert all(0 <= r["protection_rate"] <= 1 and r["n_perturbed"] > 0 for r in attacked)
        assert all(0 < r["budget"]["linf_max"] <= 15 / 255 + 1e-6 for r in attacked)
    text = build_report(tmp_path).read_text()
    assert "Worlds: **real** (data: " in text
    assert "- white-box (protection >= 80% against the attack's own surrogate): " in text
    assert "fawkes_v10 (low) vs mobileface" in text  # the one white-box row is judged
    checks = {c["name"]: c for c in json.loads((tmp_path / "checks.json").read_text())}
    assert checks["white-box"]["passed"] in (True, False) and checks["detection"]["passed"] is None
