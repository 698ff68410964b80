#!/usr/bin/env python
"""Smoke run: mmdet's own Faster R-CNN config with our OHEMSampler, a few CPU training steps on generated images.

Example:
    .venv/bin/python tools/smoke_train.py --iters 5
    .venv/bin/python tools/smoke_train.py --config mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py --sampler RandomSampler
"""
from __future__ import annotations

import argparse
import time

import torch

from ohem_experiments.quick_detectors import FASTER_FPN, build_detector, mmdet_config, synthetic_batch, train_step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=FASTER_FPN, help="mmdet config (path under mmdet's configs/ or a file)")
    p.add_argument('--sampler', default='OHEMSampler', help='R-CNN sampler type (default: %(default)s)')
    p.add_argument('--iters', type=int, default=5, help='training iterations (default: %(default)s)')
    p.add_argument('--size', type=int, default=160, help='square image size (default: %(default)s)')
    p.add_argument('--lr', type=float, default=0.01)
    args = p.parse_args(argv)
    if args.iters <= 0:
        p.error(f'--iters must be positive, got {args.iters}')

    cfg = mmdet_config(args.config, sampler_type=args.sampler)
    model = build_detector(cfg)
    data = synthetic_batch(model, size=args.size, with_mask='mask' in args.config)
    optim = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    print(f'smoke run: {args.config} with {args.sampler}, {args.iters} iterations, 2 images of '
          f'{args.size}x{args.size}, CPU ({torch.get_num_threads()} threads)')
    start = time.perf_counter()
    for i in range(1, args.iters + 1):
        log = train_step(model, data, optim)
        shown = '  '.join(f'{k}={v:.4f}' for k, v in log.items() if 'loss' in k or k == 'acc')
        elapsed = time.perf_counter() - start
        eta = elapsed / i * (args.iters - i)
        print(f'iter {i}/{args.iters}  {shown}  ({elapsed / i:.2f} s/iter, eta {eta:.0f} s)', flush=True)
    sampler = model.roi_head.bbox_sampler
    st = getattr(sampler, 'last_stats', None)
    if st is not None:
        print(f'last image: {st.candidates} candidates, loss-NMS suppressed {st.suppressed}, mined '
              f'{st.mined} ({st.mined_fg} fg)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
