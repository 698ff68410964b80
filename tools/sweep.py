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
More axes: lr_mult (x base lr), multiscale ("M": multi-scale train + TestTimeAug test), iter_bbox ("B":
iterative box regression with weighted voting at test time).

Many seeds in parallel, restartable (each worker a process with its own ``--threads``; one GPU is shared)::

    .venv/bin/python tools/sweep.py --preset table1 --seeds 0-7 --workers 8 --threads 2 \
        --out results/table1

``--preset table1`` runs the paper's Table 1 rows at toy scale (FRCN bg_lo 0.1 1:3, bg_lo 0 with 1:3, no
ratio, neither, N = 1, All RoIs B = 2048, OHEM, OHEM N = 1, OHEM without loss-NMS, and FRCN/OHEM + M, + B,
+ M + B) for every seed, skips runs finished earlier, resumes interrupted ones, and writes
``<out>/table.md`` (mean mAP with a 95% t CI per row, paired OHEM-vs-FRCN tests over seeds),
``table.json`` (the same plus every run's raw result) and ``table.png``. ``--rows`` picks rows,
``--iters`` shortens runs, ``--stop-starting-after S`` starts no run after S seconds (for time-limited
device calls: run the same command again to continue). Without ``--data-root`` the toy configs read
``data/toy_voc`` (relative to the current folder: run from the repository root); if it does not exist it
is written first with the generator's default settings (300 trainval / 100 test images, seed 0).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', help='base config for a grid sweep (e.g. configs/toy/toy_ohem.py)')
    p.add_argument('--out', required=True, help='sweep folder')
    p.add_argument('--axis', action='append', default=[], metavar='NAME=V1,V2',
                   help='one sweep axis (repeat the flag for more)')
    p.add_argument('--preset', default=None, help='named row set instead of config + axes (table1, rpn_ohem)')
    p.add_argument('--seeds', default='0', help="preset mode: training seeds, e.g. '0-7' (default 0)")
    p.add_argument('--rows', default=None, help='preset mode: comma-separated row keys (default: all)')
    p.add_argument('--iters', type=int, default=None, help='preset mode: training iterations per run')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='mmengine-style overrides applied to the base config first (e.g. data_root paths)')
    p.add_argument('--data-root', default=None, help='point every dataloader at this dataset root')
    p.add_argument('--dry-run', action='store_true', help='print the cells and exit')
    p.add_argument('--workers', type=int, default=1, help='runs at a time, each in its own process')
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads per run (default: all cores, divided by --workers)')
    p.add_argument('--stop-starting-after', type=float, default=None, metavar='SECONDS',
                   help='preset mode: start no new run after this many seconds (rerun to continue)')
    return p.parse_args(argv)


def _threads(args: argparse.Namespace) -> int:
    return args.threads or max(1, (os.cpu_count() or 1) // max(1, args.workers))


def _main_preset(args: argparse.Namespace, argv: Optional[List[str]]):
    from ohem_experiments.parallel import run_jobs
    from ohem_experiments.table1 import PRESETS, parse_seeds, plan_jobs, write_table
    if args.config or args.axis or args.cfg_options:
        sys.exit('sweep: --preset takes no config, --axis or --cfg-options (the preset defines the rows)')
    if args.preset not in PRESETS:
        sys.exit(f'sweep: unknown preset {args.preset!r}; known: {sorted(PRESETS)}')
    preset = PRESETS[args.preset]
    try:
        seeds = parse_seeds(args.seeds)
        rows = [r.strip() for r in args.rows.split(',')] if args.rows else None
        jobs = plan_jobs(preset, seeds, args.out, rows=rows, iters=args.iters, data_root=args.data_root,
                         root=ROOT)
    except (KeyError, ValueError) as e:
        sys.exit(f'sweep: {e}')
    print(f'[sweep] preset {preset.name}: {len(jobs)} run(s) ({len(jobs) // max(1, len(seeds))} row(s) x '
          f'{len(seeds)} seed(s))')
    if args.dry_run:
        for j in jobs:
            print(f'  {j.name}')
        return jobs
    if args.data_root is None and not Path('data/toy_voc/VOC2007').is_dir():
        from ohem_experiments.toy_voc import generate_toy_voc
        print('[sweep] no data/toy_voc here: writing the toy set with the generator\'s default settings')
        generate_toy_voc('data/toy_voc')
    results, failures = run_jobs(jobs, workers=args.workers, threads=_threads(args),
                                 stop_starting_after_s=args.stop_starting_after)
    command = 'python tools/sweep.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    paths = write_table(preset, jobs, results, args.out, command=command)
    print(paths['md'].read_text())
    if failures:
        sys.exit(f'sweep: {len(failures)} run(s) failed: ' + ', '.join(f'{f.job.name} ({f.log})' for f in failures))
    return results


def main(argv: Optional[List[str]] = None):
    args = parse_args(argv)
    if args.preset:
        return _main_preset(args, argv)
    if not args.config:
        sys.exit('sweep: give a base config (grid sweep) or --preset NAME')
    if args.stop_starting_after is not None:
        sys.exit('sweep: --stop-starting-after is for --preset runs')
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
    torch.set_num_threads(_threads(args) if args.workers == 1 else 1)
    outcomes = run_sweep(cfg, grid, args.out, workers=args.workers, threads=_threads(args))
    print((Path(args.out) / 'results.md').read_text())
    return outcomes


if __name__ == '__main__':
    main()
