#!/usr/bin/env bash
# Issue 14's remaining device checks in ONE call on the lent GPU machine (prepare first with
# tools/gpu_prepare.sh, exactly as for tools/gpu_check.sh):
#   device tool: carry [".gpu", ".gpu-test"], command `bash tools/gpu_check_rpn_ohem.sh`, timeout_s 600
# 1. the `cuda` test of the RPN miner (tests/test_rpn_ohem.py);
# 2. the toy ablation (sweep preset rpn_ohem, seeds 0-7, 8 workers): it starts no new run after
#    STOP_AFTER seconds, so a cut-off call returns what finished; rerun the same command (with the
#    returned cells unpacked into work_dirs/rpn_ohem_table) to continue.
# The RPN miner's cost per iteration is step `rpn` of tools/gpu_check.sh (measured on an H200 on
# 2026-11-26: docs/rpn_ohem.md). The device tool brings back at most 8 files: progress.log, the table
# (table.md/.json when the sweep wrote them) and everything else in gpu_check_rpn_ohem.tgz.
# Never run on a device yet.
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL=${OUT:-results/gpu_rpn_ohem}
OUT=$(mktemp -d)  # working folder; packed into $FINAL at the end
STOP_AFTER=${STOP_AFTER:-240}
LABEL=gpu_check_rpn_ohem
. tools/gpu_device_setup.sh

note 'cuda test of the RPN miner'
timeout 60 python3 -m pytest tests/test_rpn_ohem.py -m cuda -q -rA -p no:cacheprovider > "$OUT/cuda_tests.log" 2>&1
note "cuda tests rc=$?"; tail -3 "$OUT/cuda_tests.log"

note 'toy ablation (preset rpn_ohem, seeds 0-7)'
timeout 480 python3 tools/sweep.py --preset rpn_ohem --seeds 0-7 --workers 8 --threads 2 \
    --stop-starting-after "$STOP_AFTER" --out work_dirs/rpn_ohem_table > "$OUT/ablation.log" 2>&1
note "ablation rc=$?"
mkdir -p "$OUT/rpn_ohem_table" "$FINAL"
cp work_dirs/rpn_ohem_table/table.* "$OUT/rpn_ohem_table/" 2>/dev/null
cp work_dirs/rpn_ohem_table/table.* "$FINAL/" 2>/dev/null
(cd work_dirs/rpn_ohem_table && find cells -name result.json -o -name config_hash.txt | tar -czf "$OUT/rpn_ohem_table/cells.tgz" -T -) 2>/dev/null
tar -czf "$FINAL/gpu_check_rpn_ohem.tgz" -C "$OUT" .
cp "$OUT/progress.log" "$FINAL/"
ls -la "$FINAL"
