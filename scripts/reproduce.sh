#!/usr/bin/env bash
# Every experiment of the paper in one world (WORLD=embedded, the default: rendered faces and
# the zoo; WORLD=real: real photos and the published models), then one report over them.
# Resumable: rerun it after a kill and finished jobs are skipped, stored attacks and trained
# models reused. Wall time per experiment and of the whole are printed (and kept in
# multirun/reproduce.times); make reproduce adds peak memory.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
WORLD=${WORLD:-embedded}
SWEEPS=multirun
[ "$WORLD" = embedded ] || SWEEPS=multirun/$WORLD  # conf/world/<world>.yaml: sweep_dir
# Each experiment's config places it (experiment_info.reproduce_order): the defenses first
# (they reuse baseline's attacks), the sweeps over the zoo after.
if [ -z "${EXPERIMENTS:-}" ]; then
  EXPERIMENTS=$(WORLD=$WORLD "$BIN/python" - <<'PY'
import os
from omegaconf import OmegaConf
from facecure.paths import CONF_DIR
order = {}
for path in (CONF_DIR / "experiment").glob("*.yaml"):
    info = OmegaConf.load(path).get("experiment_info") or {}
    worlds = info.get("worlds") or ["embedded", "real"]  # conf/config.yaml's default
    if info.get("reproduce_order") is not None and os.environ["WORLD"] in worlds:
        order[path.stem] = info["reproduce_order"]
print(" ".join(sorted(order, key=order.get)))
PY
)
fi
start=$(date +%s)
failed=()
mkdir -p "$SWEEPS"
for e in $EXPERIMENTS; do
  echo "=== experiment=$e ($(date +%H:%M:%S))"
  t0=$(date +%s)
  # A sweep exits non-zero when one of its jobs failed; the others' results stay, go on.
  "$BIN/facecure" -m "experiment=$e" "world=$WORLD" "$@" || failed+=("$e")
  echo "$(date -Is) $e $(( $(date +%s) - t0 )) s" | tee -a "$SWEEPS/reproduce.times"
done
# The report checks the paper's claims on the rows (report.md, Checks); on real faces they
# must hold, so a failed check fails the reproduction (the embedded world reports them).
checks=(); [ "$WORLD" = real ] && checks=(--checks)
"$BIN/facecure-report" "$SWEEPS" --world "$WORLD" "${checks[@]}" || failed+=("report checks")
echo "reproduce ($WORLD): $(( $(date +%s) - start )) s wall; report: $SWEEPS/report.md"
if (( ${#failed[@]} )); then
  echo "experiments with failed jobs: ${failed[*]} (see $SWEEPS/<experiment>/failed_jobs.txt)"
  exit 1
fi
