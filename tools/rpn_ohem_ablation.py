#!/usr/bin/env python
"""Issue 14's ablation: where to mine hard examples - the R-CNN stage only, the RPN and the R-CNN stage, or the
RPN only - on the toy VOC data, over several seeds.

For every variant (``configs/toy/toy_ohem.py``, ``toy_ohem_rpn_ohem.py``, ``toy_rpn_ohem.py``) and seed:
train with the toy schedule, test VOC07 mAP and the RPN's proposal recall at 300 on the held-out split.
Writes ``results/rpn_ohem_ablation/summary.{md,json}``: per variant the mean mAP and recall with 95% t
intervals and the paired mAP difference to R-CNN-only OHEM. Finished runs are reused (restartable).

Cost: like ``tools/demo.py``, each run takes several minutes on 2 CPU cores (3 variants x 8 seeds: hours);
``--quick`` is a seconds-long smoke run of the same code path (2 seeds, tiny data, a few iterations).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from ohem_experiments.rpn_ablation import VARIANTS, AblationSettings
    d = AblationSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-root', default=d.data_root)
    p.add_argument('--work-dir', default=d.work_dir)
    p.add_argument('--out-dir', default=d.out_dir)
    p.add_argument('--num-trainval', type=int, default=d.num_trainval)
    p.add_argument('--num-test', type=int, default=d.num_test)
    p.add_argument('--image-size', type=int, default=d.image_size)
    p.add_argument('--hard-negative-rate', type=float, default=d.hard_negative_rate)
    p.add_argument('--data-seed', type=int, default=d.data_seed)
    p.add_argument('--seeds', type=int, nargs='+', default=list(d.seeds), help='training seeds (default 0-7)')
    p.add_argument('--iters', type=int, default=None, help="iterations per run (default: the toy configs' 1200)")
    p.add_argument('--variants', nargs='+', default=list(d.variants), choices=[v.name for v in VARIANTS])
    p.add_argument('--recall-num', type=int, default=d.recall_num, help='proposals per image for the recall')
    p.add_argument('--force', action='store_true', help='retrain runs that already finished')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: all cores)')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: seeds 0 1, 8 trainval / 4 test images of 96 px, 6 iterations, all output in '
                        'work_dirs/rpn_ohem_ablation_quick (explicit flags still win)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import torch

    from ohem_experiments.rpn_ablation import AblationSettings, run_ablation
    given = {a.split('=')[0] for a in argv if a.startswith('--')}
    if args.quick:
        quick = dict(seeds=[0, 1], num_trainval=8, num_test=4, image_size=96, iters=6,
                     data_root='data/toy_voc_quick', work_dir='work_dirs/rpn_ohem_ablation_quick',
                     out_dir='work_dirs/rpn_ohem_ablation_quick/results')
        for k, v in quick.items():
            if f'--{k.replace("_", "-")}' not in given:
                setattr(args, k, v)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    settings = AblationSettings(data_root=args.data_root, work_dir=args.work_dir, out_dir=args.out_dir,
                                num_trainval=args.num_trainval, num_test=args.num_test, image_size=args.image_size,
                                hard_negative_rate=args.hard_negative_rate, data_seed=args.data_seed,
                                seeds=tuple(args.seeds), iters=args.iters, variants=tuple(args.variants),
                                recall_num=args.recall_num, force=args.force,
                                progress_interval_s=2.0 if args.quick else 15.0)
    command = 'python tools/rpn_ohem_ablation.py ' + ' '.join(shlex.quote(a) for a in argv)
    try:
        return run_ablation(settings, command=command.strip())
    except ValueError as e:
        sys.exit(f'rpn_ohem_ablation: {e}')


if __name__ == '__main__':
    main()
