#!/usr/bin/env python
"""Converts torchvision's ImageNet VGG16 file (downloaded by hand) for this project's VGG16 detectors.

Download ``https://download.pytorch.org/models/vgg16-397923af.pth`` on a machine with internet, then::

    python tools/convert_vgg16_torchvision.py vgg16-397923af.pth checkpoints/vgg16_frcn_init.pth

The output holds ``backbone.features.*`` (conv1_1 ... conv5_3) and ``roi_head.bbox_head.shared_fcs.{0,1}.*``
(fc6, fc7; fc8 is dropped). Point both ``init_cfg`` entries of a config at it::

    python tools/train.py configs/ohem/faster_rcnn_vgg16_ohem_voc07.py --cfg-options \\
        model.backbone.init_cfg.checkpoint=checkpoints/vgg16_frcn_init.pth \\
        model.roi_head.bbox_head.init_cfg.checkpoint=checkpoints/vgg16_frcn_init.pth

(The raw torchvision file works there too; converting once makes the mapping explicit and checkable.)
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import List, Optional

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repo root, if not installed
from mmdet_ohem.models.vgg_weights import convert_torchvision_vgg16, save_converted  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help="torchvision's vgg16 state dict (.pth)")
    parser.add_argument('dst', help='output checkpoint (.pth)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Converts ``src`` to ``dst``; returns the process exit code."""
    args = parse_args(argv)
    if not osp.isfile(args.src):
        raise FileNotFoundError(f'no such file: {args.src!r}')
    sd = torch.load(args.src, map_location='cpu', weights_only=True)
    if isinstance(sd, dict) and 'state_dict' in sd:
        sd = sd['state_dict']
    out = convert_torchvision_vgg16(sd)
    n = save_converted(out, args.dst, args.src, 'convert_vgg16_torchvision')
    print(f'wrote {args.dst}: {len(out)} tensors, {n / 1e6:.1f}M parameters '
          f'(backbone convs + fc6/fc7; dropped {len(sd) - len(out)} tensor(s), i.e. fc8)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
