#!/usr/bin/env bash
# The open issues' device checks (10, 13, 14) from ONE script on the lent GPU machine (prepare first with
# tools/gpu_prepare.sh; device tool: carry [".gpu", ".gpu-test"], command `bash tools/gpu_check.sh`,
# timeout_s 580 (>= DEADLINE + 40); everything is packed by DEADLINE, default 540 s, after the start).
# Steps, in the order they run (issue 10's open questions first; 13 and 14 are resolved):
# roipool the read-only pass's RoIPool alone: mmcv's kernel vs the Triton path (mmdet_ohem.kernels.roi_pool,
#         since the thirteenth session), VGG16 feature sizes, fp32/fp16, times and equality (table in
#         progress.log, JSON in the tgz); then the read-only pass's float32 Triton RoIAlign
#         (mmdet_ohem.kernels.roi_align: fast_roi_align, the default since the sixteenth session, when it first
#         ran on a GPU) on R50-FPN's levels against mmcv's fp16 layer, with its largest error against mmcv's
#         float32 layer; the tests step runs its cuda tests, R50-FPN's benchmark times mmcv's layer in its place
#         as ours_mmcv_align, and the agreement step measures it as tf32_fast_align; the seventeenth session's
#         one-launch FPN extraction (one_launch_levels, the default since the twenty-second session, which first
#         ran it on a GPU) has two cuda tests in the tests step, and the R50-FPN step times the per-level path
#         as ours_per_level;
# tests   the Triton RoIPool against mmcv's bit for bit, and the `cuda` tests (AMP training steps of the VGG16 OHEM config at 600 px in fp16/bf16 with every
#         readonly_dtype, fp32 steps with the default TF32 read-only pass, GPU-vs-CPU selection, host-sync
#         count, benchmark path, the selection as a captured CUDA graph; issue 14's RPN miner on the GPU;
#         a 1-GPU NCCL run through tools/dist_train.sh, ended by shutdown_distributed);
# agreement  the read-only precision agreement (tf32/fp16/bf16 vs exact fp32 mined sets, and exact fp32 summed
#         in another order, the noise floor), at random init and after TRAIN_STEPS float32 SGD steps on the
#         batch (a trained head's loss spread), seeds SEEDS, with the features captured and the passes run
#         under each of AGREE_PRECISIONS (default 'fp16 bf16': `--amp` training; there 'tf32' is the
#         default's choice, fp16 under fp16 and float32 + TF32 under bf16 since 2026-11-27's twelfth
#         session; fp32 training was measured on 2026-11-27, results/gpu/h100-2026-11-27/run1); every pass
#         of an image replays the exact pass's dropout masks (VGG16's head drops half of fc6/fc7), so only
#         the precision differs; rows are written as they finish;
# (the agreement step runs after the two benchmarks since the thirteenth session)
# vgg16, r50_fpn  the benchmark in issue 10's settings: VGG16 600x1000 and R50-FPN 800x1333, batch 2, fp32
#         and fp16 AMP (+ bf16 for VGG16), variants BENCH_VARIANTS interleaved: by default random /
#         mmdet_ohem / ours (the default: read-only targets, losses and selection replayed as one CUDA
#         graph; read-only pass float32 + TF32 under bf16) / ours_exact (readonly_dtype=None: the training
#         precision, i.e. the bf16 read-only pass the default ran under bf16 until the twelfth session: its
#         bf16 row prices the switch; in fp16 it equals ours, a control), with ITERS rounds; ours_eager
#         (cuda_graph=False) was timed against the graph on 2026-11-27 (10 settings, 0.963-0.997x); VGG16 also
#         times ours_mmcv_pool (fast_roi_pool=False: mmcv's RoIPool in the read-only pass; VGG16_VARIANTS);
#         the H100 run of the sixth session measured ours_bf16 and ours_per_image already, and the rounds
#         decide more: the targets take the paired ratio's 95% interval, which at 30 rounds spanned 2-8
#         points on the H100 (name them in BENCH_VARIANTS to time them again);
# host    the host-time proxy (ohem_experiments.benchmark.host_time, since the eighteenth session) on this machine's
#         CPU: roi_head.loss of a tiny-channel R50-FPN per variant, Triton launches stubbed, ~20 s; beside the
#         r50_fpn step's GPU times it tells how the CPU proxy measured on the project's machines maps to a GPU host;
# configs one fp16 and one bf16 AMP step of every config in configs/ (one per distinct model);
# families issue 11's survey on the GPU (since the fifteenth session, never run yet): each of mmdet 3.3's
#         two-stage families from its shipped config (own RoI budget, RPN proposals, RoI layers) with only the
#         sampler swapped, RandomSampler as control, 2 steps each in fp32, fp16 and bf16 AMP at 800x1333; fails
#         where OHEM fails and the control trains, or a stage mined together did not run its selection as a
#         CUDA graph (Cascade, Double-Head, ...: tested on the CPU only); table in progress.log and the tgz;
# profile a torch.profiler view of one AMP iteration per variant (host vs device time, kernel launches);
# sweep   issue 13: the restartable sweep tool on the GPU, SMOKE=1 of tools/gpu_sweep.sh (table1 rows
#         frcn and ohem_b, 4 seeds, 30 iterations, 8 worker processes sharing the GPU);
# rpn     issue 14's RPN-miner cost per iteration (variants random / rpn_ohem / ours / ours_rpn_ohem, fp32;
#         VGG16's ~20,000 candidate anchors now take the device loss-NMS's ranked prefix).
# STEPS picks the steps of a call. The step limits add up to ~17 minutes, but they are upper bounds: on
# the H100 (2026-11-26, sixth session) all steps took 463 s together with the set-up (tests 44 s, sweep
# 95 s, rpn 42 s, benchmarks 70 s, configs 89 s, agreement 57 s, profile 41 s).
# On 2026-11-27 (H100) STEPS='tests agreement vgg16 r50_fpn configs profile' took 464 s: set-up 26 s, tests 87 s
# (the NCCL run 30 s of it), agreement 57 s, VGG16 54 s and R50-FPN 61 s (50 rounds of 4), configs 122 s, profile 57 s. A step cut off by the
# DEADLINE can be rerun alone on the warm machine, e.g. STEPS='configs' DEADLINE=240.
# The sixteenth session (H200, 15 device minutes): STEPS='roipool tests r50_fpn agreement' DEADLINE=400 took
# 301 s (tests 84 s, R50-FPN 67 s, agreement 84 s), STEPS='families' 110 s on the warm machine (families
# 94-117 s), and STEPS='tests families r50_fpn' DEADLINE=320 321 s from a cold start.
# Only 8 files come back from $OUT: the markdown tables, the agreement JSON and progress log come back as
# files, everything (logs, JSON, the sweep's cells and table) also in gpu_check.tgz. Each step has its own
# time limit, cut to what is left before DEADLINE, so a cut-off run still returns the earlier results; a
# benchmark step cut off by its limit still writes the complete rounds it timed (SIGTERM; since the twentieth
# session), and BENCH_BUDGET sizes its rounds to the time instead of to ITERS.
# ITERS/WARMUP (default 50/3) set the benchmarks' length; the RPN-miner step uses them too. The H100
# times above are with 10 iterations and 6 variants; with 30 and 6 the two benchmarks took ~60 s each,
# so 50 rounds of 4 take about as long; the last steps (sweep, rpn: issues 13 and 14, resolved) may be
# cut by the default DEADLINE.
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL=${OUT:-results/gpu}
OUT=$(mktemp -d)  # working folder; packed into $FINAL at the end
LABEL=gpu_check
ITERS=${ITERS:-50}  # run 2 of the sixth session had 30 (with 10, R50-FPN's ratios moved by points)
BENCH_VARIANTS=${BENCH_VARIANTS:-random mmdet_ohem ours ours_exact}
VGG16_VARIANTS=${VGG16_VARIANTS:-$BENCH_VARIANTS ours_mmcv_pool}  # + the read-only pass with mmcv's RoIPool
R50_VARIANTS=${R50_VARIANTS:-$BENCH_VARIANTS ours_mmcv_align ours_per_level}  # + the read-only pass with mmcv's
# RoIAlign, and with the FPN levels aligned level by level (one_launch_levels=False; one launch is the default since
# the twenty-second session) (ours_mmcv_align: fast_roi_align=False; the default runs the float32 Triton RoIAlign since 2026-11-27;
# R50-FPN has RoIAlign: ours_mmcv_pool would equal ours there)
R50_PRECISIONS=${R50_PRECISIONS:-fp32 fp16}  # the R50-FPN step's precisions: fp16 alone (issue 10's one open
# target, AMP) halves the step, for more rounds in the same time
# R50_LIMIT: the R50-FPN step's time limit (default 110 s, for 50 rounds of 6 variants; 200 rounds of 3: 150)
PROFILE_VARIANTS=${PROFILE_VARIANTS:-random mmdet_ohem ours ours_per_level}  # profile: one AMP iteration each
ROIPOOL_LAUNCHES=${ROIPOOL_LAUNCHES:-32x2 64x8 128x4 128x8 256x8}  # roipool: launch shapes timed beside the default
ALIGN_LAUNCHES=${ALIGN_LAUNCHES:-128x4 64x4 64x8 32x8 16x4}  # roipool: the float32 RoIAlign's launch shapes timed
# beside its default 32x4 (ptxas: 128x4 spills 880 bytes, 64x4 and 128x8 112 bytes, 32x4 none)
WARMUP=${WARMUP:-3}
# BENCH_BUDGET: seconds of timed rounds per model and precision in the vgg16/r50_fpn steps (benchmark.py
# --time-budget: the rounds end with the first one past it; ITERS is then the most rounds). Unset: ITERS rounds.
# With it, set a large ITERS and the step limit to the budget times the precisions plus ~40 s per precision
# (model build, Triton compilation, warm-up, the profiled iterations).
BUDGET=${BENCH_BUDGET:+--time-budget $BENCH_BUDGET}
. tools/gpu_device_setup.sh
DEADLINE=${DEADLINE:-540}  # seconds after START by which everything is packed (call with timeout_s >= +40)
limit() {  # limit STEP_SECONDS: the step's time limit, cut to what is left before DEADLINE (0: skip it)
    local left=$(( DEADLINE - ($(date +%s) - START) ))
    if [ "$left" -lt 20 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
run_step() {  # run_step SECONDS NAME COMMAND...: runs COMMAND under the cut limit, notes its exit status
    local t; t=$(limit "$1"); local name=$2; shift 2
    if [ "$t" = 0 ]; then note "$name skipped (deadline)"; return; fi
    note "$name (limit ${t}s)"; timeout "$t" "$@"; note "$name rc=$?"
}
pack() {
    mkdir -p "$FINAL"
    tar -czf "$FINAL/gpu_check.tgz" -C "$OUT" .
    # 8 files at most come back: these, the test summary and the tgz.
    for f in progress.log readonly_agreement.json bench_vgg16.md bench_r50_fpn.md bench_rpn_vgg16.md \
             bench_rpn_r50_fpn.md; do
        [ -f "$OUT/$f" ] && cp "$OUT/$f" "$FINAL/"
    done
    grep -hE 'passed|failed|host syncs|: (ok|NON-FINITE|[A-Za-z]+Error)' "$OUT"/cuda_*.log > "$FINAL/cuda_tests_summary.txt" 2>/dev/null
    ls -la "$FINAL"
}

STEPS=${STEPS:-roipool tests vgg16 r50_fpn host agreement configs families profile sweep rpn}  # which steps to run (always in this order)
has() { case " $1 " in *" $2 "*) return 0;; *) return 1;; esac; }  # has LIST WORD: WORD is one of LIST's words
want() { has "$STEPS" "$1"; }
TRAIN_STEPS=${TRAIN_STEPS:-0 100}  # agreement: measured at random init and after 100 float32 SGD steps
SEEDS=${SEEDS:-0 1}  # agreement: one batch of 2 images per seed
AGREE_PRECISIONS=${AGREE_PRECISIONS:-fp16 bf16}  # agreement: the training precisions (autocast) measured

if want roipool; then
    run_step 90 'read-only RoIPool: mmcv vs Triton' bash -c "cd tools && python3 -m ohem_experiments.benchmark.roi_pool_timing \
        --launches $ROIPOOL_LAUNCHES --out '$OUT/roi_pool.json' > '$OUT/roi_pool.log' 2>&1"
    grep -h '^|' "$OUT/roi_pool.md" 2>/dev/null | while read -r line; do note "  $line"; done  # the table, in progress.log
    run_step 60 'read-only RoIAlign on fp16 features: mmcv vs Triton (experimental)' bash -c "cd tools && python3 -m \
        ohem_experiments.benchmark.roi_pool_timing --op align --launches $ALIGN_LAUNCHES --out '$OUT/roi_align.json' \
        > '$OUT/roi_align.log' 2>&1"
    grep -h '^|' "$OUT/roi_align.md" 2>/dev/null | while read -r line; do note "  $line"; done
fi
if want tests; then
    run_step 220 'cuda tests' bash -c "python3 -m pytest tests/test_fast_roi_pool.py tests/test_fast_roi_align.py tests/test_cuda.py tests/test_rpn_ohem.py tests/test_reliability_runs.py -m cuda \
        -k 'not every_config and not mmdet_families' -q -rA -s -p no:cacheprovider --durations=10 > '$OUT/cuda_tests.log' 2>&1"
    tail -3 "$OUT/cuda_tests.log"
fi
# (exec: the step's timeout then waits for the benchmark, which on its SIGTERM writes the complete rounds it has)
want vgg16 && run_step 120 'benchmark VGG16 600x1000' bash -c "exec python3 tools/benchmark.py --device cuda --models vgg16 \
    --size 600 1000 --batch 2 --precision fp32 fp16 bf16 --variants $VGG16_VARIANTS --iters $ITERS --warmup $WARMUP $BUDGET \
    --nms-sizes 2000 --nms-repeats 10 --out '$OUT/bench_vgg16.json' > '$OUT/bench_vgg16.log' 2>&1"
want r50_fpn && run_step ${R50_LIMIT:-110} 'benchmark R50-FPN 800x1333' bash -c "exec python3 tools/benchmark.py --device cuda \
    --models r50_fpn --size 800 1333 --batch 2 --precision $R50_PRECISIONS --variants $R50_VARIANTS --iters $ITERS \
    --warmup $WARMUP $BUDGET --no-nms --out '$OUT/bench_r50_fpn.json' > '$OUT/bench_r50_fpn.log' 2>&1"
if want r50_fpn && [ -f "$OUT/bench_r50_fpn.json" ] && has "$R50_VARIANTS" ours_per_level; then
    # in progress.log: the default's (one launch for the FPN levels) time over the per-level path's, paired per round
    python3 tools/benchmark.py --compare ours ours_per_level "$OUT/bench_r50_fpn.json" > "$OUT/compare_one_launch.md" 2>&1
    grep -h '^|' "$OUT/compare_one_launch.md" | while read -r line; do note "  $line"; done
fi
if want host; then
    run_step 45 'host time per roi_head.loss (CPU proxy, this machine)' bash -c "cd tools && python3 -m \
        ohem_experiments.benchmark.host_time --variants random mmdet_ohem ours ours_per_level --rounds 100 \
        --out '$OUT/host_time.json' > '$OUT/host_time.log' 2>&1"
    grep -h '^|\|^tiny' "$OUT/host_time.log" 2>/dev/null | while read -r line; do note "  $line"; done
fi
if want agreement; then
    run_step 200 'read-only precision agreement' bash -c "python3 -m ohem_experiments.benchmark.readonly_agreement \
        --device cuda --train-steps $TRAIN_STEPS --seeds $SEEDS --train-precision $AGREE_PRECISIONS \
        --dtypes tf32 tf32_fast_align fp32 fp16 bf16 fp32_reordered --out '$OUT/readonly_agreement.json' > '$OUT/readonly_agreement.log' 2>&1"
fi
if want configs; then
    run_step 220 'every config: fp16 and bf16 AMP steps' bash -c "python3 -m pytest tests/test_cuda.py -m cuda \
        -k every_config -q -rA -s -p no:cacheprovider > '$OUT/cuda_configs.log' 2>&1"
    grep -E ': (ok|NON-FINITE|[A-Za-z]+Error)' "$OUT/cuda_configs.log" | tail -40
fi
if want families; then
    run_step 200 "mmdet's two-stage families: OHEM vs RandomSampler, fp32/fp16/bf16 AMP steps" bash -c "OHEM_FAMILIES_OUT='$OUT' \
        python3 -m pytest tests/test_cuda.py -m cuda -k mmdet_families -q -rA -s -p no:cacheprovider \
        > '$OUT/cuda_families.log' 2>&1"
    grep -h '^|' "$OUT/families.md" 2>/dev/null | while read -r line; do note "  $line"; done
    tail -3 "$OUT/cuda_families.log"
fi
want profile && for spec in 'r50_fpn 800 1333' 'vgg16 600 1000'; do
    set -- $spec
    run_step 35 "profile one AMP iteration per variant, $1" bash -c "python3 -m ohem_experiments.benchmark.profile_iteration \
        $1 --size $2 $3 --precision fp16 --variants $PROFILE_VARIANTS --out '$OUT/profile_$1.json' \
        > '$OUT/profile_$1.log' 2>&1"
done
if want sweep; then
    run_step 170 'sweep smoke (table1 rows frcn, ohem_b; 4 seeds, 30 iterations, 8 workers)' \
        env SMOKE=1 OUT="$OUT/sweep" bash tools/gpu_sweep.sh table1 90 > "$OUT/sweep_call.log" 2>&1
    grep -h 'sweep rc\|finished runs' "$OUT/sweep/progress.log" 2>/dev/null | while read -r line; do note "  $line"; done
    [ -f "$OUT/sweep/table.md" ] && cat "$OUT/sweep/table.md"
fi
if want rpn; then
    for spec in 'vgg16 600 1000' 'r50_fpn 800 1333'; do
        set -- $spec
        run_step 60 "RPN miner cost $1 $2x$3" bash -c "python3 tools/benchmark.py --device cuda --models $1 \
            --size $2 $3 --batch 2 --variants random rpn_ohem ours ours_rpn_ohem --iters $ITERS --warmup $WARMUP \
            --no-nms --out '$OUT/bench_rpn_$1.json' > '$OUT/bench_rpn_$1.log' 2>&1"
    done
fi
pack
