"""Sweeps: readable job folders, a rerun skips finished jobs, a failed job hides nothing."""
import os
import subprocess
import sys

import pytest
from conftest import TINY
from omegaconf import OmegaConf

from facecure.results import read_results


def test_sweep_reruns_skip_finished_jobs_and_failures_are_reported(tmp_path, cache_dir):
    # The tiny settings as an experiment config, so job folders are named by the swept keys only.
    experiments = tmp_path / "conf" / "experiment"
    experiments.mkdir(parents=True)
    tiny = OmegaConf.to_yaml(OmegaConf.from_dotlist([*TINY, "logger=none"]))
    (experiments / "tiny.yaml").write_text("# @package _global_\n" + tiny.replace("logger: none\n", ""))
    sweep = tmp_path / "sweep"
    env = {**os.environ, "FACECURE_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}

    def facecure(*modes):
        return subprocess.run(
            [sys.executable, "-m", "facecure.cli", "--config-dir", str(tmp_path / "conf"), "-m",
             "experiment=tiny", "logger=none", f"attack.mode={','.join(modes)}",
             f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, env=env, timeout=900)

    first = facecure("low", "high")
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["attack.mode=high", "attack.mode=low"]
    assert "2 jobs finished, 0 failed" in first.stdout
    results = {j: read_results(sweep / j / "results.jsonl") for j in ("attack.mode=high", "attack.mode=low")}

    again = facecure("low", "high")
    assert again.returncode == 0 and "skipping" in again.stdout + again.stderr
    for job, records in results.items():  # untouched: the very same records, nothing recomputed
        assert read_results(sweep / job / "results.jsonl") == records

    bad = facecure("low", "nonsense")
    assert bad.returncode == 1
    assert "1 jobs finished, 1 failed" in bad.stdout
    assert "attack.mode must be one of" in (sweep / "attack.mode=nonsense" / "error.txt").read_text()
    assert "attack.mode=nonsense" in (sweep / "failed_jobs.txt").read_text()


@pytest.mark.slow
def test_killed_sweep_rerun_finishes_with_the_same_numbers(tmp_path, cache_dir):
    import signal
    import time

    experiments = tmp_path / "conf" / "experiment"
    experiments.mkdir(parents=True)
    tiny = OmegaConf.to_yaml(OmegaConf.from_dotlist(TINY))
    (experiments / "tiny.yaml").write_text("# @package _global_\n" + tiny)
    env = {**os.environ, "FACECURE_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}

    def command(sweep):
        return [sys.executable, "-m", "facecure.cli", "--config-dir", str(tmp_path / "conf"), "-m",
                "experiment=tiny", "logger=none", "attack.mode=low,mid,high", f"hydra.sweep.dir={sweep}"]

    whole = tmp_path / "whole"
    subprocess.run(command(whole), check=True, capture_output=True, env=env, timeout=900)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not list(killed.glob("*/results.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # half way: at least one job done, not all
    proc.wait()
    done = {p.parent.name for p in killed.glob("*/results.jsonl")}
    assert 1 <= len(done) < 3
    rerun = subprocess.run(command(killed), capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "3 jobs finished, 0 failed" in rerun.stdout
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("timings",)} for r in rs]  # noqa: E731
    for job in ("attack.mode=low", "attack.mode=mid", "attack.mode=high"):
        assert strip(read_results(killed / job / "results.jsonl")) == strip(read_results(whole / job / "results.jsonl"))


def test_a_changed_config_file_unskips_finished_jobs(tmp_path):
    """Jobs read configs by name (train attacks, surrogates): their contents are in the job's
    fingerprint, links followed, launcher presets left out."""
    from facecure.app import conf_tree_fingerprint

    conf, shared = tmp_path / "conf", tmp_path / "experiments"
    (conf / "attack").mkdir(parents=True)
    (conf / "hydra" / "launcher").mkdir(parents=True)
    shared.mkdir()
    (conf / "experiment").symlink_to(shared)
    (conf / "attack" / "a.yaml").write_text("steps: 1\n")
    (shared / "e.yaml").write_text("x: 1\n")
    (conf / "hydra" / "launcher" / "slurm.yaml").write_text("partition: a\n")

    def print_of():
        conf_tree_fingerprint.cache_clear()
        return conf_tree_fingerprint(conf)

    first = print_of()
    (conf / "hydra" / "launcher" / "slurm.yaml").write_text("partition: b\n")
    assert print_of() == first
    (shared / "e.yaml").write_text("x: 2\n")
    second = print_of()
    assert second != first
    (conf / "attack" / "a.yaml").write_text("steps: 2\n")
    assert print_of() != second
    conf_tree_fingerprint.cache_clear()
