#!/usr/bin/env python
"""Re-saves an mmengine checkpoint so that torch >= 2.6 can load it with ``weights_only=True``.

Checkpoints written by plain mmengine 0.10 on torch >= 2.6 pickle ``builtins.getattr`` (from
``HistoryBuffer``'s statistics methods), which the safe loader refuses. This tool loads such a file with
``weights_only=False`` — which can run code from the file, so use it only on checkpoints you trust and
say so with ``--trust`` — and writes it back with ``mmdet_ohem``'s pickling fix, after which it loads safely.

Example:
    .venv/bin/python tools/upgrade_checkpoint.py work_dirs/x/iter_4000.pth --trust
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

import mmdet_ohem  # noqa: F401  (installs the HistoryBuffer pickling fix and the safe-globals allow-list)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('checkpoint', help='checkpoint to upgrade')
    p.add_argument('--out', help='output path (default: overwrite, keeping a .bak copy)')
    p.add_argument('--trust', action='store_true',
                   help='confirm the file comes from a trusted source (required: loading is not sandboxed)')
    args = p.parse_args(argv)
    if not args.trust:
        p.error('refusing to unpickle without --trust: weights_only=False can execute code from the file')
    if not os.path.isfile(args.checkpoint):
        p.error(f'no such checkpoint: {args.checkpoint}')
    try:
        torch.load(args.checkpoint, map_location='cpu', weights_only=True)
        print(f'{args.checkpoint} already loads with weights_only=True; nothing to do')
        return 0
    except Exception:  # noqa: BLE001 - any refusal means it needs upgrading
        pass
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    out = args.out or args.checkpoint
    if out == args.checkpoint:
        os.replace(args.checkpoint, args.checkpoint + '.bak')
    torch.save(ckpt, out)
    torch.load(out, map_location='cpu', weights_only=True)  # proves the result loads safely
    print(f'wrote {out} (loads with weights_only=True)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
