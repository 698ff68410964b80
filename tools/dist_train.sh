#!/usr/bin/env bash
# Multi-GPU / multi-node training, as mmdet 3.3's tools/dist_train.sh but launched with torchrun.
# Usage: bash tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node (defaults: 1, 0, 127.0.0.1, 29500).
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [--work-dir DIR] [--amp] [--auto-scale-lr] [--resume [CKPT]] [--cfg-options ...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
