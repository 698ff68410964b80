"""Where our read-only pass spends its time: ``torch.profiler`` over one image's read-only pass.

Usage::

    cd tools && ../.venv/bin/python -m ohem_experiments.benchmark.profile_readonly r50_fpn 320
    cd tools && ../.venv/bin/python -m ohem_experiments.benchmark.profile_readonly vgg16 320 --threads 2
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from .detectors import MODELS, prepare, set_threads, swap_sampler

__all__ = ['profile_readonly', 'main']


def profile_readonly(model: str, size: int, device: str = 'cpu', rows: int = 12) -> str:
    """Profiles the first read-only pass of a training forward (after one warm-up forward): the batch's
    (``readonly_losses_batch``, the default) or, for heads mined one image at a time, the first image's.

    Returns:
        The profiler's table sorted by self CPU time.

    Raises:
        RuntimeError: If the forward ran no read-only pass.
    """
    from mmdet_ohem.readonly_pass import RoIHeadAdapter

    prep = prepare(model, ['ours'], size, device=device)
    swap_sampler(prep.model, prep.samplers['ours'])
    torch.manual_seed(0)
    prep.model.loss(prep.data['inputs'], prep.data['data_samples'])  # warm-up
    names = ('readonly_losses_batch', 'readonly_losses')
    origs = {name: getattr(RoIHeadAdapter, name) for name in names}
    captured: dict = {}

    def profiled(orig):
        def wrapped(self, *args, **kwargs):
            if 'prof' in captured:
                return orig(self, *args, **kwargs)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                out = orig(self, *args, **kwargs)
            captured['prof'] = prof
            return out
        return wrapped

    for name in names:
        setattr(RoIHeadAdapter, name, profiled(origs[name]))
    try:
        torch.manual_seed(0)
        prep.model.loss(prep.data['inputs'], prep.data['data_samples'])
    finally:
        for name in names:
            setattr(RoIHeadAdapter, name, origs[name])
    if 'prof' not in captured:
        raise RuntimeError(f'profile_readonly: the {model} forward ran no read-only pass')
    return captured['prof'].key_averages().table(sort_by='self_cpu_time_total', row_limit=rows)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: ``MODEL SIZE [--threads N]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('model', choices=sorted(MODELS))
    p.add_argument('size', type=int)
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args(argv)
    set_threads(args.threads)
    print(profile_readonly(args.model, args.size))


if __name__ == '__main__':
    main()
