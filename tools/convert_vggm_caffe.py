#!/usr/bin/env python
"""Converts Fast R-CNN's ImageNet VGG_CNN_M_1024 weights (a file you already have) for the VGGM detectors.

Fast R-CNN's ``data/scripts/fetch_imagenet_models.sh`` provides ``VGG_CNN_M_1024.v2.caffemodel``. This
tool reads it without Caffe or protobuf (a small wire-format reader in
``mmdet_ohem.models.vggm_weights``); a flat ``{'conv1.weight': ..., ..., 'fc7.bias': ...}`` dict saved
with ``torch.save`` (``.pth``) or ``numpy.savez`` (``.npz``) works too::

    python tools/convert_vggm_caffe.py VGG_CNN_M_1024.v2.caffemodel checkpoints/vggm1024_frcn_init.pth

The output holds ``backbone.features.conv{1..5}.*`` and ``roi_head.bbox_head.shared_fcs.{0,1}.*`` (fc6,
fc7; the ImageNet fc8 is dropped). The VGGM configs read that path by default
(``vggm_checkpoint`` in ``configs/_base_/models/vggm.py``). The weights expect Caffe's input:
BGR, 0-255, pixel mean subtracted, which is what those configs feed them. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import List, Optional

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repo root, if not installed
from mmdet_ohem.models.vgg_weights import save_converted  # noqa: E402
from mmdet_ohem.models.vggm import VGGM_LAYERS  # noqa: E402
from mmdet_ohem.models.vggm_weights import convert_vggm, read_caffemodel  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='VGG_CNN_M_1024 .caffemodel, or a flat conv1.weight... dict (.pth/.npz)')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    return parser.parse_args(argv)


def _read(path: str) -> dict:
    if path.endswith('.caffemodel'):
        return read_caffemodel(path)
    if path.endswith('.npz'):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    sd = torch.load(path, map_location='cpu', weights_only=True)
    return sd['state_dict'] if isinstance(sd, dict) and 'state_dict' in sd else sd


def main(argv: Optional[List[str]] = None) -> int:
    """Converts ``src`` to ``dst``; returns the process exit code."""
    args = parse_args(argv)
    if not osp.isfile(args.src):
        raise FileNotFoundError(f'no such file: {args.src!r}')
    src = _read(args.src)
    out = convert_vggm(src)
    n = save_converted(out, args.dst, args.src, 'convert_vggm_caffe')
    left_out = sorted({k.split('.')[0] for k in src} - set(VGGM_LAYERS))
    print(f'wrote {args.dst}: {len(out)} tensors, {n / 1e6:.2f}M parameters (conv1-conv5 + fc6/fc7; '
          f'left out: {left_out})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
