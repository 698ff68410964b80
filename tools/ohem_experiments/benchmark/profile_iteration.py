"""Where a whole training iteration spends host and device time, per sampler variant (``torch.profiler``).

For each variant: the synchronised wall time of one iteration, the summed time of its device kernels, the
number of kernel launches, and the top operators by self host time and by device time; our sampler's parts
(``sample``, read-only pass, loss-NMS) are marked as profiler ranges. A device that is busy for much less than
the wall time is waiting on the host (launch-bound): fewer, larger launches then pay, faster kernels do not.

Usage (GPU)::

    python -m ohem_experiments.benchmark.profile_iteration r50_fpn --size 800 1333 --precision fp16 \
        --variants random mmdet_ohem ours --out results/profile_r50.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .detectors import MODELS, PRECISIONS, VARIANTS, prepare, swap_sampler, train_step
from .timing import _StateRestorer, instrumented_parts

__all__ = ['profile_iteration', 'main']


def _ranges(prep) -> contextlib.AbstractContextManager:
    """Marks the breakdown's parts (``ohem::roi_head``, ``ohem::sampler``, ``ohem::readonly``,
    ``ohem::loss_nms``) as profiler ranges for the duration of the block."""

    def named(part: str) -> Callable[[Callable], Callable]:
        def wrap(fn: Callable) -> Callable:
            def inner(*args, **kwargs):
                with record_function(f'ohem::{part}'):
                    return fn(*args, **kwargs)
            return inner
        return wrap

    return instrumented_parts(prep, named)


def _summary(prof, wall_ms: float, rows: int) -> dict:
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    ranges = {e.key: {'calls': e.count, 'host_ms': e.cpu_time_total / 1e3,
                      'device_ms': getattr(e, 'device_time_total', getattr(e, 'cuda_time_total', 0)) / 1e3}
              for e in events if e.key.startswith('ohem::')}
    dev_key = 'self_cuda_time_total' if torch.cuda.is_available() else 'self_cpu_time_total'
    return {'wall_ms': wall_ms, 'kernels': len(kernels),
            'kernel_ms': sum(k.device_time_total if hasattr(k, 'device_time_total') else k.cuda_time_total
                             for k in kernels) / 1e3,
            'ranges': ranges,
            'top_host': events.table(sort_by='self_cpu_time_total', row_limit=rows),
            'top_device': events.table(sort_by=dev_key, row_limit=rows)}


def profile_iteration(model: str, size: Sequence[int], variants: Sequence[str], precision: str = 'fp16',
                      device: str = 'cuda', warmup: int = 3, rows: int = 15) -> Dict[str, dict]:
    """Profiles one training iteration per variant after ``warmup`` untimed ones, from the same state."""
    prep = prepare(model, variants, list(size), device=device, precision=precision)
    cuda = device.startswith('cuda')
    swap_sampler(prep.model, prep.samplers[variants[0]])
    torch.manual_seed(0)
    train_step(prep.model, prep.optim, prep.data, prep.precision, prep.scaler)
    restorer = _StateRestorer(prep)
    for _ in range(warmup):
        for v in variants:
            swap_sampler(prep.model, prep.samplers[v])
            restorer.restore()
            torch.manual_seed(0)
            train_step(prep.model, prep.optim, prep.data, prep.precision, prep.scaler)
    out = {}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for v in variants:
        swap_sampler(prep.model, prep.samplers[v])
        restorer.restore()
        torch.manual_seed(0)
        if cuda:
            torch.cuda.synchronize()
        with _ranges(prep), profile(activities=activities) as prof:
            start = torch.cuda.Event(enable_timing=True) if cuda else None
            end = torch.cuda.Event(enable_timing=True) if cuda else None
            if cuda:
                start.record()
            train_step(prep.model, prep.optim, prep.data, prep.precision, prep.scaler)
            if cuda:
                end.record()
                end.synchronize()
        wall = start.elapsed_time(end) if cuda else float('nan')
        out[v] = _summary(prof, wall, rows)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: ``MODEL [--size H W] [--precision P] [--variants ...] [--out JSON]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('model', choices=sorted(MODELS))
    p.add_argument('--size', type=int, nargs=2, default=[800, 1333])
    p.add_argument('--precision', default='fp16', choices=sorted(PRECISIONS))
    p.add_argument('--variants', nargs='+', default=['random', 'mmdet_ohem', 'ours'], choices=sorted(VARIANTS))
    p.add_argument('--device', default='cuda')
    p.add_argument('--rows', type=int, default=15)
    p.add_argument('--out', default=None, help='JSON output (the tables are printed)')
    args = p.parse_args(argv)
    res = profile_iteration(args.model, args.size, args.variants, args.precision, args.device, rows=args.rows)
    for v, r in res.items():
        print(f'=== {args.model} {args.precision} {v}: wall {r["wall_ms"]:.2f} ms, {r["kernels"]} kernels, '
              f'{r["kernel_ms"]:.2f} ms of kernels')
        for k, rr in sorted(r['ranges'].items()):
            print(f'  {k}: {rr["calls"]} calls, host {rr["host_ms"]:.2f} ms, device {rr["device_ms"]:.2f} ms')
        print(r['top_host'])
        print(r['top_device'])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
