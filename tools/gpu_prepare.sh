#!/usr/bin/env bash
# Prepares this checkout for tools/gpu_check.sh on the lent GPU machine (run HERE, once per checkout):
# copies the shared GPU kit (mmcv 2.1 built with CUDA ops for that machine, mmengine, mmdet wheels) to
# .gpu/ and downloads the test runner's wheels (pytest, hypothesis; pure Python or cp312) to .gpu-test/,
# which the device machine cannot download itself. Both folders are git-ignored via .git/info/exclude.
# Then call the device tool with carry [".gpu", ".gpu-test"] and the command `bash tools/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${GPU_KIT:-../shared/gpu}
PY=${PYTHON:-.venv/bin/python}
rm -rf .gpu && cp -r "$KIT" .gpu && chmod -R u+w .gpu
mkdir -p .gpu-test
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu-test \
    pytest==9.2.0 hypothesis==6.170.17 iniconfig pluggy pygments sortedcontainers
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
for p in /.gpu/ /.gpu-test/; do grep -qsx "$p" "$exclude" || echo "$p" >> "$exclude"; done
du -sh .gpu .gpu-test
