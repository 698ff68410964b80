#!/usr/bin/env python
"""Training-loss curves of several runs from mmengine's json logs, in one PNG (+ OHEM mining stats).

Example::

    .venv/bin/python tools/plot_curves.py work_dirs/demo/frcn work_dirs/demo/ohem \
        --labels FRCN OHEM --keys loss loss_cls --out loss.png

Each RUN is a work dir (its newest ``<timestamp>/vis_data/<timestamp>.json`` is read), a timestamped
log folder, or a json log file. mmdet's own analysis tool reads the same json logs (the OHEM statistics
are named without '/', e.g. ``ohem_fg_share``, as it needs); it ships inside the mmdet package::

    python $(python -c "import mmdet, os; print(os.path.dirname(mmdet.__file__))")/.mim/tools/analysis_tools/analyze_logs.py \
        plot_curve work_dirs/.../vis_data/<timestamp>.json --keys loss ohem_fg_share --out loss.png

This tool adds what analyze_logs does not: several runs in one figure, smoothing, resolving a work dir to
its newest log, and the OHEM mining-stat panels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', help='work dirs, log dirs or json log files')
    p.add_argument('--labels', nargs='+', default=None, help='one label per run (default: folder names)')
    p.add_argument('--keys', nargs='+', default=['allroi_mean_rl', 'loss', 'loss_cls'],
                   help='logged keys, one panel each (missing ones are skipped)')
    p.add_argument('--smooth', type=int, default=5, help='moving-average window over logged points')
    p.add_argument('--no-ohem-stats', action='store_true', help='leave out the OHEM mining-stat panels')
    p.add_argument('--title', default=None)
    p.add_argument('--out', default='loss_curves.png')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Path:
    args = parse_args(argv)
    from ohem_experiments.json_logs import load_json_log
    from ohem_experiments.plots import plot_loss_curves
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        sys.exit(f'plot_curves: {len(args.runs)} runs but {len(labels)} labels')
    try:
        runs = {label: load_json_log(r) for label, r in zip(labels, args.runs)}
        out = plot_loss_curves(runs, args.out, keys=args.keys, smooth=args.smooth, title=args.title,
                               with_ohem_stats=not args.no_ohem_stats)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'plot_curves: {e}')
    print(f'wrote {out}')
    return out


if __name__ == '__main__':
    main()
