"""How many of the RoIs an exact float32 read-only pass mines does a reduced-precision one mine?

For each image of a fixed synthetic batch, the candidates, assignments and features of one float32
training forward are captured at the sampler; then the read-only pass is run on exactly those inputs in
float32 (TF32 off), with TF32 matmuls (the default ``readonly_dtype='tf32'`` in float32 training on CUDA),
under fp16 autocast (what the default inherits under ``--amp``) and under bf16, and the selection rule is
applied to each. Reported per precision: the mean and minimum over
images of |mined_reduced ∩ mined_fp32| / |mined_fp32|.

Weights are the benchmark's random init (no download): an untrained head gives near-equal losses, so
rounding reorders them more than trained weights would; read the numbers as a pessimistic bound.

Usage::

    python -m ohem_experiments.benchmark.readonly_agreement --device cuda --out agreement.json
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, List, Optional, Sequence

import torch

from .detectors import prepare, swap_sampler

__all__ = ['readonly_agreement', 'main']

SETTINGS = {'vgg16': (600, 1000), 'r50_fpn': (800, 1333)}


def readonly_agreement(model: str, size: Sequence[int], device: str = 'cuda', seeds: Sequence[int] = (0, 1, 2),
                       dtypes: Sequence[str] = ('tf32', 'fp16', 'bf16')) -> Dict[str, object]:
    """Overlap of the mined sets, reduced precision vs float32, over ``len(seeds)`` batches of 2 images."""

    from mmdet_ohem.readonly_pass import READONLY_PRECISIONS
    from mmdet_ohem.samplers.ohem_sampler import OHEMSampler

    overlaps: Dict[str, List[float]] = {d: [] for d in dtypes}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for seed in seeds:
            prep = prepare(model, ['ours'], size, 2, (6, 4), device, seed)
            sampler: OHEMSampler = prep.samplers['ours']
            swap_sampler(prep.model, sampler)
            captured = []
            orig = sampler._select

            def capture(losses, boxes, is_pos, labels, _orig=orig):
                captured.append((boxes, is_pos, labels))
                return _orig(losses, boxes, is_pos, labels)

            orig_losses = sampler.head.readonly_losses
            inputs = []

            def capture_inputs(*args, **kwargs):
                inputs.append((args, kwargs))
                return orig_losses(*args, **kwargs)

            sampler._select, sampler.head.readonly_losses = capture, capture_inputs
            with torch.no_grad():
                prep.model.loss(prep.data['inputs'], prep.data['data_samples'])
            sampler._select, sampler.head.readonly_losses = orig, orig_losses
            for (args, _), (boxes, is_pos, labels) in zip(inputs, captured):
                exact = sampler.head.readonly_losses(*args[:5], None).ranking(sampler.ranking_loss)
                want = set(sampler._select(exact, boxes, is_pos, labels).indices.tolist())
                for d in dtypes:
                    approx = sampler.head.readonly_losses(*args[:5], READONLY_PRECISIONS[d]).ranking(sampler.ranking_loss)
                    got = set(sampler._select(approx, boxes, is_pos, labels).indices.tolist())
                    overlaps[d].append(len(got & want) / max(len(want), 1))
            del prep
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return {'model': model, 'size': list(size), 'images': sum(1 for _ in overlaps[dtypes[0]]),
            'overlap': {d: {'mean': sum(v) / len(v), 'min': min(v), 'all': v} for d, v in overlaps.items()}}


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    """Command line: ``--device``, ``--models``, ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--models', nargs='+', default=list(SETTINGS), choices=sorted(SETTINGS))
    p.add_argument('--out', default=None)
    args = p.parse_args(argv)
    rows = [readonly_agreement(m, SETTINGS[m], args.device) for m in args.models]
    text = json.dumps(rows, indent=1)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
    return rows


if __name__ == '__main__':
    main()
