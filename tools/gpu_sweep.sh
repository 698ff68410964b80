#!/usr/bin/env bash
# One device call of a restartable sweep on the lent GPU machine: issue 13's Table 1 (preset table1) or
# issue 14's RPN ablation (preset rpn_ohem), 8 seeds, 8 worker processes sharing the GPU.
#   here, once: bash tools/gpu_prepare.sh
#   device tool: command `bash tools/gpu_sweep.sh PRESET [STOP_AFTER]`, timeout_s 600,
#                carry [".gpu", ".gpu-test", "results/PRESET/cells.tgz"]  (the last one from the 2nd call on)
# Each call starts no new run after STOP_AFTER seconds (default 420) and brings back, in at most 8 files:
# cells.tgz (every finished run's result.json, config hash included), the table (table.md/.json/.png, from
# all finished runs so far), progress.log and logs.tgz. Copy cells.tgz and the table to results/PRESET/
# and make the next call with it carried: finished runs are then skipped (same config hash), and the sweep
# goes on with the rest. Runs cut off by the end of a call start again from scratch in the next one (their
# checkpoints do not come back). The B rows of table1 train nothing: they test the checkpoint of their
# seed's frcn/ohem/frcn_m/ohem_m run, so they start right after it in the same call, even past STOP_AFTER
# (a test each). SMOKE=1 ran on an H100 (2026-11-26): 12 runs in 95 s; continuing across calls was not exercised there.
# SMOKE=1: a short check that the sweep runs on the GPU (rows frcn and ohem_b, seeds 0-3, 30 iterations,
# 8 workers) in a scratch folder; results/PRESET is not touched. A few minutes of device time.
set -uo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:?usage: bash tools/gpu_sweep.sh PRESET [STOP_AFTER]}
STOP_AFTER=${2:-420}
FINAL=${OUT:-results/gpu_sweep}
OUT=$(mktemp -d)  # working folder; packed into $FINAL at the end
LABEL=gpu_sweep
. tools/gpu_device_setup.sh
if [ "${SMOKE:-0}" = 1 ]; then
    DIR=$(mktemp -d)/smoke_$PRESET  # outside $OUT: its checkpoints do not go into logs.tgz
    RUNS=(--rows frcn,ohem_b --seeds 0-3 --iters 30)
    [ "$PRESET" = table1 ] || RUNS=(--seeds 0-3 --iters 30)
else
    DIR=results/$PRESET
    RUNS=(--seeds 0-7)
fi
mkdir -p "$DIR" "$FINAL"
if [ "${SMOKE:-0}" != 1 ] && [ -f "$DIR/cells.tgz" ]; then
    tar -xzf "$DIR/cells.tgz" -C "$DIR" && note "unpacked $(tar -tzf "$DIR/cells.tgz" | grep -c result.json) finished runs"
fi
note "sweep $PRESET ${RUNS[*]}, 8 workers, no new run after ${STOP_AFTER}s"
python3 tools/sweep.py --preset "$PRESET" "${RUNS[@]}" --workers 8 --threads 2 \
    --stop-starting-after "$STOP_AFTER" --out "$DIR" > "$OUT/sweep.log" 2>&1
note "sweep rc=$?"
(cd "$DIR" && find cells -name result.json | tar -czf "$FINAL/cells.tgz" -T -) 2>/dev/null
note "finished runs so far: $(tar -tzf "$FINAL/cells.tgz" 2>/dev/null | grep -c result.json)"
cp "$DIR"/table.* "$FINAL/" 2>/dev/null
find "$DIR/cells" -name worker.log -newer "$OUT/progress.log" 2>/dev/null | tar -czf "$OUT/worker_logs.tgz" -T - 2>/dev/null
tar -czf "$FINAL/logs.tgz" -C "$OUT" .
cp "$OUT/progress.log" "$FINAL/"
ls -la "$FINAL"
