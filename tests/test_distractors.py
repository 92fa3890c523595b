"""eval.distractors: drawn embeddings with the gallery's statistics, nested galleries, real
distractor pictures, and the runs' records and figure."""
import numpy as np
import pytest
from conftest import TINY_DATA, TINY_ZOO

from facecure.app import run
from facecure.data import synthetic_faces
from facecure.evaluation.distractors import Distractors, distractor_labels, draw_like
from facecure.evaluation.evaluator import NearestNeighbourEvaluator
from facecure.report import build_report
from facecure.results import read_results


def gallery(n_ids=30, per_id=6, dim=16, seed=0):
    """Unit rows around well-separated identity centres, as a face model's are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    rows = np.repeat(centres, per_id, 0) + 0.3 * rng.standard_normal((n_ids * per_id, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32), np.repeat([f"id{i}" for i in range(n_ids)], per_id)


def test_drawn_rows_match_the_gallerys_statistics():
    rows, labels = gallery()
    drawn = draw_like(rows, labels, 2000, 1, seed=0)
    assert drawn.shape == (2000, 16) and drawn.dtype == np.float32
    assert np.allclose(np.linalg.norm(drawn, axis=1), 1, atol=1e-5)  # normalised as the gallery
    # New people among the real ones: as far from the nearest real row as a real row is
    # from its nearest stranger; and a drawn identity's two rows as close as a real one's.
    def dist(x, y):
        return np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1))
    real = dist(rows, rows)
    stranger = np.where(labels[:, None] != labels[None], real, np.inf).min(1).mean()
    assert 0.7 < dist(drawn[:300], rows).min(1).mean() / stranger < 1.3
    same = np.where((labels[:, None] == labels[None]) & (real > 0), real, np.nan)
    pairs = draw_like(rows, labels, 300, 2, seed=0)
    within = np.linalg.norm(pairs[0::2] - pairs[1::2], axis=1).mean()
    assert 0.7 < within / np.nanmean(same) < 1.3
    assert np.linalg.norm(drawn.mean(0) - rows.mean(0)) < 0.2
    assert np.array_equal(draw_like(rows, labels, 2000, 1, seed=0), drawn)  # seeded
    assert not np.array_equal(draw_like(rows, labels, 2000, 1, seed=1), drawn)


def test_galleries_of_growing_n_are_nested_so_protection_never_falls():
    rows, labels = gallery()
    big = draw_like(rows, labels, 2500, 2, seed=0)
    assert np.array_equal(draw_like(rows, labels, 700, 2, seed=0), big[:1400])
    # Queries of the first 10 identities; attacker id0's rows swapped for far-away ones.
    queries, q_labels = rows[:60] + 0.05, labels[:60]
    far = -rows[labels == "id0"]
    rates = []
    for n in (0, 10, 100, 1000, 2500):
        ev = NearestNeighbourEvaluator(np.vstack([rows, big[:2 * n]]),
                                       [*labels, *distractor_labels(n, 2)], queries, q_labels)
        rates.append(ev.outcome("id0", far).protection_rate)
        assert "distractor:0" not in q_labels
    assert rates == sorted(rates)


def test_real_distractor_pictures_are_other_people(tmp_path):
    data = synthetic_faces(6, 3, 16, progress=False, population="candidates")
    with pytest.raises(ValueError, match="holds 6 identities"):
        Distractors(10, 1, data)
    d = Distractors(4, 2, data)
    with pytest.raises(ValueError, match="must be other people"):
        d.check_disjoint([next(iter(data.identities))])
    with pytest.raises(ValueError, match="eval.distractors must be >= 0"):
        Distractors(-1)


def test_a_run_with_distractors_records_them_and_the_report_draws_the_curve(compose_cfg, tmp_path):
    runs = []
    for n in (0, 200):
        out = tmp_path / f"distractors_{n}"
        cfg = compose_cfg(*TINY_ZOO, *TINY_DATA, "attack=noise", "n_attackers=2", "progress=false",
                          "trainer.enable_progress_bar=false", f"eval.distractors={n}",
                          "experiment_name=distractors", f"+run_dir={out}")
        run(cfg)
        runs.append([r for r in read_results(out / "results.jsonl") if r["kind"] == "attacker"])
    plain, more = runs
    assert all(r["distractors"] == 200 and r["distractors_drawn"] for r in more)
    assert all("distractors" in r["labels"] for r in more)
    # Nested galleries: no attacker's protection falls, no clean accuracy rises.
    for a, b in zip(sorted(plain, key=lambda r: (r["attack"], r["attacker"])),
                    sorted(more, key=lambda r: (r["attack"], r["attacker"]))):
        assert b["protection_rate"] >= a["protection_rate"]
        assert b["clean_accuracy"] <= a["clean_accuracy"]
    report = build_report(tmp_path, tmp_path / "report")
    text = report.read_text()
    assert "[+200 distractors, drawn]" in text
    assert (tmp_path / "report" / "figures" / "distractors_distractors.png").exists()


def test_approximate_points_at_sizes_only_they_reach_are_their_own_line_with_one_recall():
    from facecure.report.figures import distractor_lines
    from facecure.report.groups import group_attackers

    def record(n, index, attacker, recall=None, attack="lowkey"):
        return {"experiment": "distractors", "attack": attack, "extractor": "faceres",
                "extractor_fingerprint": "w", "seed": 0, "attacker": attacker,
                "attack_fingerprint": "a", "protection_rate": 0.5, "clean_accuracy": 0.9,
                "distractors": n, "distractors_drawn": bool(n), "index": index,
                "index_recall_at_1": recall,  # the labels a run's records carry (app.py)
                "labels": ["experiment", "attack", "extractor", *(["index"] if index != "flat" else []),
                           *(["distractors"] if n else [])]}

    records = [record(n, "flat", u, attack=a) for n in (0, 100) for u in ("u1", "u2")
               for a in ("lowkey", "none")]
    records += [record(10**6, "ivf", "u1", 0.9), record(10**6, "ivf", "u2", 0.8),
                record(10**6, "ivf", "u1", 0.75, attack="none")]
    records += [record(10**6, "hnsw", "u1", 0.6, attack="fawkes_v10")]  # one size: no curve
    lines, recall = distractor_lines(group_attackers(records))
    by_line = {k: sorted(g["distractors"] for g in v) for k, v in lines.items()}
    assert by_line == {("lowkey", "faceres"): [0, 100], ("lowkey", "faceres [ivf]"): [10**6],
                       ("none", "faceres"): [0, 100], ("none", "faceres [ivf]"): [10**6]}
    # one recall per model, index and size, the lowest of its jobs', whichever attack's line
    assert recall == {("faceres", "ivf", 10**6): 0.75}
    assert distractor_lines(group_attackers([record(0, "flat", "u1")])) == ({}, {})
