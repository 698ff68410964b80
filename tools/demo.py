#!/usr/bin/env python
"""The main CPU experiment (``make demo``): what OHEM does, without a GPU or a dataset download.

1. writes the deterministic toy VOC2007-format set (skipped when identical data exist);
2. trains FRCN (bg_lo 0.1, 1:3), FRCN without heuristics and OHEM with the same model, schedule and
   seed (``configs/toy/``: the real VGG16/VOC07 configs with CPU-only overrides);
3. tests each with VOC07 11-point mAP on the held-out split;
4. prints the comparison table and writes ``results/demo/summary.{md,json}`` and
   ``results/demo/loss_curves.png`` (training-loss curves + OHEM mining stats).

Finished runs with an identical config are reused, so an interrupted demo restarts where it stopped.
Defaults (what ``make demo`` runs, ``--threads 1``) took 9.5-15.5 minutes on this project's 2-core machine
with other jobs beside them. ``--quick`` is a smoke run of the same code path (8 images, 6 iterations; measured
2 min 16 s on a busy 2-core machine): its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from ohem_experiments.demo import DEMO_RUNS, DemoSettings
    d = DemoSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-root', default=d.data_root)
    p.add_argument('--work-dir', default=d.work_dir)
    p.add_argument('--out-dir', default=d.out_dir)
    p.add_argument('--num-trainval', type=int, default=d.num_trainval)
    p.add_argument('--num-test', type=int, default=d.num_test)
    p.add_argument('--image-size', type=int, default=d.image_size)
    p.add_argument('--hard-negative-rate', type=float, default=d.hard_negative_rate)
    p.add_argument('--data-seed', type=int, default=d.data_seed)
    p.add_argument('--seed', type=int, default=d.seed, help='training seed, the same for every run')
    p.add_argument('--iters', type=int, default=None, help="iterations per run (default: the configs' 1200)")
    p.add_argument('--runs', nargs='+', default=list(d.runs), choices=[r.name for r in DEMO_RUNS])
    p.add_argument('--force', action='store_true', help='retrain runs that already finished')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: all cores)')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: 8 trainval / 4 test images of 96 px, 6 iterations, all output in '
                        'work_dirs/demo_quick (explicit flags still win)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import torch

    from ohem_experiments.demo import DemoSettings, run_demo
    given = {a.split('=')[0] for a in argv if a.startswith('--')}
    if args.quick:
        quick = dict(num_trainval=8, num_test=4, image_size=96, iters=6, data_root='data/toy_voc_quick',
                     work_dir='work_dirs/demo_quick', out_dir='work_dirs/demo_quick/results')
        for k, v in quick.items():
            if f'--{k.replace("_", "-")}' not in given:
                setattr(args, k, v)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0
    if args.threads is None and load > 1.0:
        print(f'[demo] note: the machine is busy (load average {load:.1f}); torch threads competing with other '
              'processes can slow training several-fold: consider --threads 1', flush=True)
    settings = DemoSettings(data_root=args.data_root, work_dir=args.work_dir, out_dir=args.out_dir,
                            num_trainval=args.num_trainval, num_test=args.num_test, image_size=args.image_size,
                            hard_negative_rate=args.hard_negative_rate, data_seed=args.data_seed, seed=args.seed,
                            iters=args.iters, runs=tuple(args.runs), force=args.force,
                            progress_interval_s=2.0 if args.quick else 15.0)
    command = 'make demo' if not argv else 'python tools/demo.py ' + ' '.join(shlex.quote(a) for a in argv)
    try:
        return run_demo(settings, command=command)
    except ValueError as e:
        sys.exit(f'demo: {e}')


if __name__ == '__main__':
    main()
