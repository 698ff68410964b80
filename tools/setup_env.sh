#!/usr/bin/env bash
# One set-up path for every README command and for CI.
#
# Creates .venv/ in the project root and installs everything into it: torch (CPU wheel by
# default), mmcv 2.1.0 built from source with its ops, mmengine, mmdet 3.3 and this package.
# A second run checks a stamp and returns in seconds.
#
# Environment knobs:
#   PYTHON=/path/to/python3.11   interpreter the venv is made from (default: python3.11 or python3)
#   TORCH_SPEC='torch==2.5.1'    pip requirement used when the venv has no torch (default torch==2.13.0,
#                                the CPU wheel on this machine kind). For a GPU build point it at your
#                                own wheel or index, e.g.
#                                TORCH_SPEC='torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124'
#   OHEM_SYSTEM_SITE=1           make the venv see the base interpreter's site-packages, so a torch
#                                (and a CUDA mmcv) already installed there is reused as it is.
#   MMCV_SPEC='mmcv==2.1.0'      mmcv requirement, built with MMCV_WITH_OPS=1 (CUDA ops if nvcc and a
#                                CUDA torch are present).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY_BASE="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
MMCV_SPEC="${MMCV_SPEC:-mmcv==2.1.0}"
STAMP="$VENV/.ohem-setup-stamp"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# The stamp covers every input that changes what gets installed.
want_stamp="$(cat "$ROOT/setup.cfg" "$ROOT/tools/setup_env.sh" 2>/dev/null | sha256sum | cut -c1-16) $TORCH_SPEC $MMCV_SPEC ${OHEM_SYSTEM_SITE:-0}"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && "$VENV/bin/python" -c 'import pkg_resources, mmcv.ops, mmdet, mmdet_ohem' 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV from $PY_BASE"
  if [ "${OHEM_SYSTEM_SITE:-0}" = 1 ]; then
    "$PY_BASE" -m venv --system-site-packages "$VENV"
  else
    "$PY_BASE" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

"$PY" -c 'import wheel' 2>/dev/null || "${PIP[@]}" install -q wheel

if "$PY" -c 'import torch' 2>/dev/null; then
  log "torch present: $("$PY" -c 'import torch; print(torch.__version__)')"
else
  log "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${PIP[@]}" install $TORCH_SPEC
fi

# numpy first: mmcv's build imports it.
"$PY" -c 'import numpy' 2>/dev/null || "${PIP[@]}" install -q numpy

if "$PY" -c 'import mmcv.ops' 2>/dev/null; then
  log "mmcv with ops present: $("$PY" -c 'import mmcv; print(mmcv.__version__)')"
else
  log "building $MMCV_SPEC with ops from source (about 10 minutes on 2 cores; pip caches the wheel)"
  "${PIP[@]}" install -q 'setuptools<70'  # mmcv's setup.py imports pkg_resources (see below)
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" install --no-build-isolation "$MMCV_SPEC"
fi

log "installing mmengine, mmdet and mmdet_ohem (editable) with test extras"
"${PIP[@]}" install -q -e "$ROOT[test]"
# pkg_resources is gone from setuptools >= 70, but mmcv's build and mmengine (resolving `mmdet::` config
# bases) import it. torch 2.13 declares setuptools >= 77 (it only needs it to compile extensions), so pip
# reinstalls a new one with any install above: pin it back last. pip reports the torch conflict; harmless.
if ! "$PY" -c 'import pkg_resources' 2>/dev/null; then
  log "pinning setuptools<70 back (pip will report torch's setuptools>=77 requirement as a conflict: harmless)"
  "${PIP[@]}" install -q 'setuptools<70'
fi

"$PY" - <<'PY'
import pkg_resources, torch, mmcv, mmengine, mmdet, mmcv.ops  # noqa: F401
import mmdet_ohem  # noqa: F401
print(f"[setup] torch {torch.__version__}  mmcv {mmcv.__version__}  mmengine {mmengine.__version__}  mmdet {mmdet.__version__}")
PY
echo "$want_stamp" > "$STAMP"
log "done"
