#!/usr/bin/env python
"""Writes the deterministic toy VOC2007-format dataset (see :mod:`ohem_experiments.toy_voc`).

Example::

    .venv/bin/python tools/make_toy_voc.py data/toy_voc --num-trainval 300 --num-test 100 --seed 0

The result (``data/toy_voc/VOC2007``) is read by mmdet's ``VOCDataset`` unchanged; ``configs/toy/``
point at ``data/toy_voc``. Same settings -> byte-identical files; an existing identical dataset is kept.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ohem_experiments.toy_voc import DEFAULT_CLASSES, SUPPORTED_SHAPES, generate_toy_voc, preview  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('out_dir', nargs='?', default='data/toy_voc', help='dataset root (default: data/toy_voc)')
    p.add_argument('--num-trainval', type=int, default=300)
    p.add_argument('--num-test', type=int, default=100)
    p.add_argument('--image-size', type=int, nargs='+', default=[160], metavar='PX',
                   help='side, or width height (default: 160)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--classes', nargs='+', default=list(DEFAULT_CLASSES), choices=SUPPORTED_SHAPES)
    p.add_argument('--hard-negative-rate', type=float, default=0.3,
                   help='fraction of images with 1-2 unlabelled object-like regions (default: 0.3)')
    p.add_argument('--max-objects', type=int, default=3)
    p.add_argument('--overwrite', action='store_true', help='regenerate even if identical data exist')
    p.add_argument('--preview', default=None, metavar='PNG',
                   help='also write a grid of sample images (green: labelled objects, red: hard negatives)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Path:
    args = parse_args(argv)
    size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    try:
        root = generate_toy_voc(args.out_dir, num_trainval=args.num_trainval, num_test=args.num_test,
                                image_size=size, seed=args.seed, classes=args.classes,
                                hard_negative_rate=args.hard_negative_rate, max_objects=args.max_objects,
                                overwrite=args.overwrite)
    except ValueError as e:
        sys.exit(f'make_toy_voc: {e}')
    counts = json.loads((root / 'toy_voc.json').read_text())['counts']
    print(f'toy VOC written to {root}')
    if args.preview:
        print(f'preview: {preview(root, args.preview)}')
    for split, c in counts.items():
        print(f'  {split}: ' + ', '.join(f'{k}={v}' for k, v in c.items()))
    return root


if __name__ == '__main__':
    main()
