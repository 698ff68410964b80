"""Which of mmdet 3.3's two-stage families train with ``OHEMSampler``, next to ``RandomSampler`` as control.

Each family is mmdet's own shipped config with only the R-CNN sampler ``type`` changed (plus the CPU
necessities of :func:`quick_detectors.mmdet_config`: RoIAlign for RoIPool, no pretrained weights), a
budget of 64 RoIs per image, at most 128 RPN proposals, and two real training steps on a fixed synthetic
batch of two 128 px images. The result for each (family, sampler) is ``ok`` (finite losses),
``refused at build: ...`` or the exception of the first failing step.

Run: ``PYTHONPATH=$PWD:$PWD/tools python -m ohem_experiments.compat_survey [--only htc sabl] [--json out]``.
docs/compatibility.md records the output; tests/test_compatibility.py runs the same builds.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from .quick_detectors import build_detector, mmdet_config, synthetic_batch, train_step

__all__ = ['Family', 'FAMILIES', 'family_config', 'try_family']


@dataclass(frozen=True)
class Family:
    """One mmdet two-stage family: its shipped config and what its synthetic batch needs."""

    config: str
    with_mask: bool = False
    with_semantic: bool = False
    num_proposals: int = 0  # > 0: no RPN, proposals come with the data (Fast R-CNN)
    num_classes: int = 5


FAMILIES: Dict[str, Family] = {
    'faster_fpn': Family('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
    'faster_c4': Family('faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py'),
    'fast_rcnn': Family('fast_rcnn/fast-rcnn_r50_fpn_1x_coco.py', num_proposals=96),
    'mask_rcnn': Family('mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', with_mask=True),
    'cascade': Family('cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'),
    'cascade_mask': Family('cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py', with_mask=True),
    'htc': Family('htc/htc_r50_fpn_1x_coco.py', with_mask=True, with_semantic=True),
    'htc_no_semantic': Family('htc/htc-without-semantic_r50_fpn_1x_coco.py', with_mask=True),
    'scnet': Family('scnet/scnet_r50_fpn_1x_coco.py', with_mask=True, with_semantic=True),
    'double_head': Family('double_heads/dh-faster-rcnn_r50_fpn_1x_coco.py'),
    'sabl': Family('sabl/sabl-faster-rcnn_r50_fpn_1x_coco.py'),
    'sabl_cascade': Family('sabl/sabl-cascade-rcnn_r50_fpn_1x_coco.py'),
    'grid': Family('grid_rcnn/grid-rcnn_r50_fpn_gn-head_1x_coco.py'),
    'dynamic': Family('dynamic_rcnn/dynamic-rcnn_r50_fpn_1x_coco.py'),
    'libra': Family('libra_rcnn/libra-faster-rcnn_r50_fpn_1x_coco.py'),
    'seesaw': Family('seesaw_loss/mask-rcnn_r50_fpn_seesaw-loss_random-ms-2x_lvis-v1.py', with_mask=True),
    'ms_rcnn': Family('ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py', with_mask=True),
    'point_rend': Family('point_rend/point-rend_r50-caffe_fpn_ms-1x_coco.py', with_mask=True),
    'pisa': Family('pisa/faster-rcnn_r50_fpn_pisa_1x_coco.py'),
    'sparse_rcnn': Family('sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py'),
    'crowddet': Family('crowddet/crowddet-rcnn_r50_fpn_8xb2-30e_crowdhuman.py', num_classes=1),
}


def family_config(name: str, sampler_type: str = 'OHEMSampler', num: int = 64, rpn_max_per_img: int = 128):
    """The family's shipped config with only the R-CNN sampler type changed (and the CPU edits)."""
    fam = FAMILIES[name]
    cfg = mmdet_config(fam.config, sampler_type=sampler_type, sampler=dict(num=num))
    rpn_proposal = (cfg.model.get('train_cfg') or {}).get('rpn_proposal')
    if rpn_proposal is not None and 'max_per_img' in rpn_proposal:
        rpn_proposal.max_per_img = rpn_max_per_img
    return cfg


def try_family(name: str, sampler_type: str, steps: int = 2, size: int = 128) -> str:
    """``'ok'``, ``'refused at build: ...'`` or ``'<Error>: ...'`` for one family and sampler."""
    fam = FAMILIES[name]
    try:
        cfg = family_config(name, sampler_type)
        model = build_detector(cfg)
    except Exception as e:  # noqa: BLE001 - the survey reports every failure
        return f'refused at build: {type(e).__name__}: {_short(e)}'
    try:
        data = synthetic_batch(model, size=size, with_mask=fam.with_mask, with_semantic=fam.with_semantic,
                               num_proposals=fam.num_proposals, num_classes=fam.num_classes)
        optim = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
        for _ in range(steps):  # mmdet's RoI heads rename the proposals' fields in place: a fresh copy
            log = train_step(model, copy.deepcopy(data), optim)
        bad = {k: v for k, v in log.items() if not torch.isfinite(torch.tensor(v))}
        return f'non-finite: {bad}' if bad else 'ok'
    except Exception as e:  # noqa: BLE001
        where = traceback.extract_tb(e.__traceback__)[-1]
        return f'{type(e).__name__}: {_short(e)} ({where.filename.rsplit("/", 1)[-1]}:{where.lineno})'


def _short(e: Exception, limit: int = 300) -> str:
    text = ' '.join(str(e).split())
    return text if len(text) <= limit else text[:limit] + '...'


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--only', nargs='*', choices=list(FAMILIES), help='families to try (default: all)')
    p.add_argument('--samplers', nargs='*', default=['RandomSampler', 'OHEMSampler'])
    p.add_argument('--json', help='write the results here as JSON')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')  # weight-init tables are noise here
    results: Dict[str, Dict[str, str]] = {}
    for name in args.only or list(FAMILIES):
        results[name] = {}
        for sampler in args.samplers:
            t0 = time.time()
            results[name][sampler] = try_family(name, sampler)
            print(f'{name:16s} {sampler:14s} {time.time() - t0:5.1f}s {results[name][sampler]}', flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
