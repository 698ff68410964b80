#!/usr/bin/env bash
# Issue 10's device checks in ONE call on the lent GPU machine (prepare first with tools/gpu_prepare.sh):
#   device tool: carry [".gpu", ".gpu-test"], command `bash tools/gpu_check.sh`, timeout_s 600
# 1. the `cuda` tests (AMP training steps of the VGG16 OHEM config at 600 px in fp16/bf16 with every
#    readonly_dtype, the other configs with AMP, GPU-vs-CPU selection, host-sync count, benchmark path);
# 2. the benchmark in the issue's settings: VGG16 600x1000 and R50-FPN 800x1333, batch 2, fp32 and fp16
#    AMP (+ bf16 for VGG16), variants random / mmdet_ohem / ours / ours_bf16, interleaved;
# 3. the read-only precision agreement (fp16/bf16 vs exact fp32 mined sets).
# Everything goes to $OUT (the device tool brings it back): logs, JSON and markdown tables.
# BUDGET: ~15 device minutes per task, including the machine's start; steps are ordered by value and
# each has its own time limit, so a cut-off run still returns the earlier results.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu}
LABEL=gpu_check
. tools/gpu_device_setup.sh

note 'cuda tests'
timeout 150 python3 -m pytest tests/test_cuda.py -m cuda -q -rA -s -p no:cacheprovider --durations=10 \
    > "$OUT/cuda_tests.log" 2>&1
note "cuda tests rc=$?"; tail -3 "$OUT/cuda_tests.log"

note 'benchmark VGG16 600x1000'
timeout 120 python3 tools/benchmark.py --device cuda --models vgg16 --size 600 1000 --batch 2 \
    --precision fp32 fp16 bf16 --iters 10 --warmup 3 --nms-sizes 2000 --nms-repeats 10 \
    --out "$OUT/bench_vgg16.json" > "$OUT/bench_vgg16.log" 2>&1
note "vgg16 rc=$?"

note 'benchmark R50-FPN 800x1333'
timeout 100 python3 tools/benchmark.py --device cuda --models r50_fpn --size 800 1333 --batch 2 \
    --precision fp32 fp16 --iters 10 --warmup 3 --no-nms \
    --out "$OUT/bench_r50_fpn.json" > "$OUT/bench_r50_fpn.log" 2>&1
note "r50_fpn rc=$?"

note 'read-only precision agreement'
timeout 90 python3 -m ohem_experiments.benchmark.readonly_agreement --device cuda \
    --out "$OUT/readonly_agreement.json" > "$OUT/readonly_agreement.log" 2>&1
note "agreement rc=$?"
ls -la "$OUT"
