#!/usr/bin/env bash
# Every experiment of the paper on the embedded default, then one report over all of them.
# Resumable: rerun it after a kill and finished jobs are skipped, stored attacks and trained
# models reused. Wall time and peak memory of the whole are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
EXPERIMENTS=${EXPERIMENTS:-"baseline oblivious unprotected transfer_time adaptive detection clip_finetune combined classifiers pubfig"}
start=$(date +%s)
failed=()
for e in $EXPERIMENTS; do
  echo "=== experiment=$e ($(date +%H:%M:%S))"
  # A sweep exits non-zero when one of its jobs failed; the others' results stay, go on.
  "$BIN/facecure" -m "experiment=$e" "$@" || failed+=("$e")
done
"$BIN/facecure-report" multirun
echo "reproduce: $(( $(date +%s) - start )) s wall; report: multirun/report.md"
if (( ${#failed[@]} )); then
  echo "experiments with failed jobs: ${failed[*]} (see multirun/<experiment>/failed_jobs.txt)"
  exit 1
fi
