#!/usr/bin/env python
"""Ablation sweep over OHEM's heuristics from any base config (toy or real VOC).

Example (toy data, ~4 cells)::

    .venv/bin/python tools/sweep.py configs/toy/toy_ohem.py --out work_dirs/sweep_toy \
        --axis ohem=on,off --axis bg_lo=0,0.1 --axis iters=600

Axes: N (images/batch), B (RoIs/batch, per-image num = B/N), bg_lo, ohem (on/off), ratio (1:3 on/off),
nms (loss-NMS IoU or none), ranking_loss (cls+loc/cls/loc), seed, iters. One work dir per cell under
``<out>/cells/``; cells that finished with the same config are skipped, and an interrupted cell resumes
from its last checkpoint, so rerunning the same command continues the sweep. At the end it writes
``<out>/results.md``, ``results.csv`` and ``results.png``. ``--dry-run`` lists the cells only.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='base config (e.g. configs/toy/toy_ohem.py or configs/ohem/...)')
    p.add_argument('--out', required=True, help='sweep folder')
    p.add_argument('--axis', action='append', default=[], metavar='NAME=V1,V2',
                   help='one sweep axis (repeat the flag for more)')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='mmengine-style overrides applied to the base config first (e.g. data_root paths)')
    p.add_argument('--data-root', default=None, help='point every dataloader at this dataset root')
    p.add_argument('--dry-run', action='store_true', help='print the cells and exit')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: all cores)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None):
    args = parse_args(argv)
    from mmengine.config import Config, DictAction

    from ohem_experiments.config_edits import is_ohem, set_data_root
    from ohem_experiments.sweep import expand_grid, parse_axis_values, run_sweep
    try:
        grid = dict(parse_axis_values(a) for a in args.axis)
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            ns = argparse.Namespace()
            DictAction(option_strings=[], dest='o')(None, ns, args.cfg_options)
            cfg.merge_from_dict(ns.o)
        if args.data_root:
            set_data_root(cfg, args.data_root)
        cells = expand_grid(grid, is_ohem(cfg))
    except ValueError as e:
        sys.exit(f'sweep: {e}')
    print(f'[sweep] {len(cells)} cell(s) from {args.config}:')
    for c in cells:
        print(f'  {c.name}')
    if args.dry_run:
        return cells
    import torch
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    outcomes = run_sweep(cfg, grid, args.out)
    print((Path(args.out) / 'results.md').read_text())
    return outcomes


if __name__ == '__main__':
    main()
