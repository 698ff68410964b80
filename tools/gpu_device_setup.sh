# Sourced by the one-call device scripts (tools/gpu_check.sh, tools/gpu_sweep.sh) after `cd` to
# the repository root, with OUT (output folder) and LABEL (progress-line prefix) set: creates $OUT, defines
# `note`, loads the GPU kit's environment (.gpu/device_env.sh), installs the test wheels, sets PYTHONPATH
# and records the GPU. Exits the calling script if the kit's environment fails.
mkdir -p "$OUT"
START=$(date +%s)
note() { echo "[$LABEL +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/progress.log"; }

. .gpu/device_env.sh > "$OUT/device_env.log" 2>&1 || { note 'device_env failed'; cat "$OUT/device_env.log"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-test .gpu-test/*.whl \
    > "$OUT/pip_test.log" 2>&1 || note 'test wheels did not install (see pip_test.log)'
export PYTHONPATH=$PWD:$PWD/tools:/tmp/site:/tmp/site-test PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
