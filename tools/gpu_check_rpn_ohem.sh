#!/usr/bin/env bash
# Issue 14's device checks in ONE call on the lent GPU machine (prepare first with tools/gpu_prepare.sh,
# exactly as for tools/gpu_check.sh):
#   device tool: carry [".gpu", ".gpu-test"], command `bash tools/gpu_check_rpn_ohem.sh`, timeout_s 600
# 1. the `cuda` test of the RPN miner (tests/test_rpn_ohem.py);
# 2. the RPN miner's cost per iteration: benchmark variants random / rpn_ohem / ours / ours_rpn_ohem,
#    interleaved, VGG16 600x1000 and R50-FPN 800x1333, batch 2, fp32 (rpn_ohem - random and
#    ours_rpn_ohem - ours are the miner's cost) -> docs/benchmark.md;
# 3. the toy ablation (sweep preset rpn_ohem, seeds 0-7, 8 workers): it starts no new run after
#    STOP_AFTER seconds, so a cut-off call returns what finished; rerun the same command (with the
#    returned cells copied back into work_dirs/rpn_ohem_table) to continue.
# Everything goes to $OUT (the device tool brings it back). Never verified on a device yet.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_rpn_ohem}
STOP_AFTER=${STOP_AFTER:-240}
LABEL=gpu_check_rpn_ohem
. tools/gpu_device_setup.sh

note 'cuda test of the RPN miner'
timeout 60 python3 -m pytest tests/test_rpn_ohem.py -m cuda -q -rA -p no:cacheprovider > "$OUT/cuda_tests.log" 2>&1
note "cuda tests rc=$?"; tail -3 "$OUT/cuda_tests.log"

for spec in 'vgg16 600 1000' 'r50_fpn 800 1333'; do
    set -- $spec
    note "benchmark $1 $2x$3"
    timeout 110 python3 tools/benchmark.py --device cuda --models "$1" --size "$2" "$3" --batch 2 \
        --variants random rpn_ohem ours ours_rpn_ohem --iters 10 --warmup 3 --no-nms \
        --out "$OUT/bench_rpn_$1.json" > "$OUT/bench_rpn_$1.log" 2>&1
    note "$1 rc=$?"
done

note 'toy ablation (preset rpn_ohem, seeds 0-7)'
timeout 330 python3 tools/sweep.py --preset rpn_ohem --seeds 0-7 --workers 8 --threads 2 \
    --stop-starting-after "$STOP_AFTER" --out work_dirs/rpn_ohem_table > "$OUT/ablation.log" 2>&1
note "ablation rc=$?"
mkdir -p "$OUT/rpn_ohem_table"
cp work_dirs/rpn_ohem_table/table.* "$OUT/rpn_ohem_table/" 2>/dev/null
(cd work_dirs/rpn_ohem_table && find cells -name result.json -o -name config_hash.txt | tar -czf "$OLDPWD/$OUT/rpn_ohem_table/cells.tgz" -T -) 2>/dev/null
ls -la "$OUT"
