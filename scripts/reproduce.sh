#!/usr/bin/env bash
# Every experiment of the paper on the embedded default, then one report over all of them.
# Resumable: rerun it after a kill and finished jobs are skipped, stored attacks and trained
# models reused. Wall time per experiment and of the whole are printed (and kept in
# multirun/reproduce.times); make reproduce adds peak memory.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
# Each experiment's config places it (experiment_info.reproduce_order): the defenses first
# (they reuse baseline's attacks), the sweeps over the zoo after.
if [ -z "${EXPERIMENTS:-}" ]; then
  EXPERIMENTS=$("$BIN/python" - <<'PY'
from omegaconf import OmegaConf
from facecure.paths import CONF_DIR
order = {}
for path in (CONF_DIR / "experiment").glob("*.yaml"):
    place = (OmegaConf.load(path).get("experiment_info") or {}).get("reproduce_order")
    if place is not None:
        order[path.stem] = place
print(" ".join(sorted(order, key=order.get)))
PY
)
fi
start=$(date +%s)
failed=()
mkdir -p multirun
for e in $EXPERIMENTS; do
  echo "=== experiment=$e ($(date +%H:%M:%S))"
  t0=$(date +%s)
  # A sweep exits non-zero when one of its jobs failed; the others' results stay, go on.
  "$BIN/facecure" -m "experiment=$e" "$@" || failed+=("$e")
  echo "$(date -Is) $e $(( $(date +%s) - t0 )) s" | tee -a multirun/reproduce.times
done
"$BIN/facecure-report" multirun
echo "reproduce: $(( $(date +%s) - start )) s wall; report: multirun/report.md"
if (( ${#failed[@]} )); then
  echo "experiments with failed jobs: ${failed[*]} (see multirun/<experiment>/failed_jobs.txt)"
  exit 1
fi
