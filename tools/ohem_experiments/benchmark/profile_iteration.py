"""Where a whole training iteration spends host and device time, per sampler variant (``torch.profiler``).

For each variant: the synchronised wall time of one iteration, the summed time of its device kernels, the
number of kernel launches, and the top operators by self host time and by device time; our sampler's parts
(``sample``, read-only pass, loss-NMS) are marked as profiler ranges. A device that is busy for much less than
the wall time is waiting on the host (launch-bound): fewer, larger launches then pay, faster kernels do not.

Per range (:func:`range_times`): its host time (the range's span on the host), the part of it spent in CUDA
synchronising and copy calls (where the host waits for the device: ``.tolist()``, ``.item()``, ``nonzero``),
the device time of the kernels launched inside it, and its span on the device's timeline. Until the
nineteenth session the ranges were read from ``key_averages()``, which lists a range twice on CUDA (the host
event and its device-side annotation, under one name); the annotation, read last, hid the host event, so every
range's host time read 0.00 ms and its "device" time was the annotation's span. (The kernel count then also
counted those annotations, a handful per iteration; it no longer does.)

Usage (GPU)::

    python -m ohem_experiments.benchmark.profile_iteration r50_fpn --size 800 1333 --precision fp16 \
        --variants random mmdet_ohem ours --out results/profile_r50.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .detectors import MODELS, PRECISIONS, VARIANTS, prepare, swap_sampler, train_step
from .timing import _patched, _StateRestorer, instrumented_parts

__all__ = ['profile_iteration', 'main']


@contextlib.contextmanager
def _ranges(prep) -> Iterator[None]:
    """Marks the breakdown's parts (``ohem::roi_head``, ``ohem::sampler``, ``ohem::readonly``,
    ``ohem::loss_nms``) as profiler ranges for the duration of the block, and two parts of ours inside the
    read-only pass: ``ohem::extract`` (the one-read FPN extraction, :func:`~mmdet_ohem.readonly_pass.extract_levels_one_read`,
    with its host read of the level counts on the per-level path) and ``ohem::selection`` (the selection graph's
    input copies, replay and one read, :meth:`~mmdet_ohem.selection.graph.SelectionGraphs.run`)."""
    from mmdet_ohem import readonly_pass
    from mmdet_ohem.selection.graph import SelectionGraphs

    def named(part: str) -> Callable[[Callable], Callable]:
        def wrap(fn: Callable) -> Callable:
            def inner(*args, **kwargs):
                with record_function(f'ohem::{part}'):
                    return fn(*args, **kwargs)
            return inner
        return wrap

    with contextlib.ExitStack() as stack:
        stack.enter_context(instrumented_parts(prep, named))
        stack.enter_context(_patched(readonly_pass, 'extract_levels_one_read', named('extract')))
        stack.enter_context(_patched(SelectionGraphs, 'run', named('selection')))
        yield


#: CUDA runtime calls in which the host waits for the device (or for a copy that waits for it).
WAIT_CALLS = frozenset({'cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaEventSynchronize', 'cudaMemcpy',
                        'cudaMemcpyAsync'})
#: Of those, the explicit synchronisations (what the benchmark's ``syncs/iter`` counts are made of).
SYNC_CALLS = frozenset({'cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaEventSynchronize'})


def _waits(events: Sequence[Any]) -> List[Any]:
    """The host events among ``events`` that are :data:`WAIT_CALLS`, in time order."""
    cpu = torch.autograd.DeviceType.CPU
    return sorted((e for e in events if e.device_type == cpu and e.name in WAIT_CALLS), key=lambda e: e.time_range.start)


def _device_total(e) -> float:
    return getattr(e, 'device_time_total', None) or getattr(e, 'cuda_time_total', 0) or 0


def _outermost(events: List[Any]) -> List[Any]:
    """``events`` less those inside another of them (a range entered again within itself counts once)."""
    out: List[Any] = []
    for e in sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end)):
        if out and e.time_range.end <= out[-1].time_range.end:
            continue
        out.append(e)
    return out


def range_times(events: Sequence[Any], prefix: str = 'ohem::') -> Dict[str, dict]:
    """Per profiler range named ``prefix...`` in ``events`` (``prof.events()``: ``FunctionEvent`` objects): ``calls``,
    ``host_ms`` (the host events' spans), ``wait_ms`` and ``waits`` (the :data:`WAIT_CALLS` inside them: host
    time spent waiting for the device or a copy), ``syncs`` (the :data:`SYNC_CALLS` among them), ``device_ms``
    (the kernels launched inside the range) and ``device_span_ms`` (the range's span on the device timeline,
    from the annotation CUDA records under the same name; 0 without one). A range nested in itself counts
    once."""
    cpu = torch.autograd.DeviceType.CPU
    hosts: Dict[str, List[Any]] = {}
    devices: Dict[str, List[Any]] = {}
    for e in events:
        if e.name.startswith(prefix):
            (hosts if e.device_type == cpu else devices).setdefault(e.name, []).append(e)
    waits = _waits(events)
    out: Dict[str, dict] = {}
    for name in sorted(set(hosts) | set(devices)):
        top = _outermost(hosts.get(name, []))
        inside = [w for w in waits if any(r.time_range.start <= w.time_range.start and w.time_range.end <= r.time_range.end
                                          for r in top)]
        out[name] = {
            'calls': len(hosts.get(name, [])),
            'host_ms': sum(e.time_range.elapsed_us() for e in top) / 1e3,
            'wait_ms': sum(w.time_range.elapsed_us() for w in inside) / 1e3,
            'waits': len(inside),
            'syncs': sum(w.name in SYNC_CALLS for w in inside),
            'device_ms': sum(_device_total(e) for e in top) / 1e3,
            'device_span_ms': sum(e.time_range.elapsed_us() for e in _outermost(devices.get(name, []))) / 1e3,
        }
    return out


def _summary(prof, wall_ms: float, rows: int) -> dict:
    events = prof.key_averages()
    raw = prof.events()
    kernels = [e for e in raw if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith('ohem::')]
    waits = _waits(raw)
    dev_key = 'self_cuda_time_total' if torch.cuda.is_available() else 'self_cpu_time_total'
    return {'wall_ms': wall_ms, 'kernels': len(kernels),
            'kernel_ms': sum(_device_total(k) for k in kernels) / 1e3,
            'wait_ms': sum(w.time_range.elapsed_us() for w in waits) / 1e3,
            'syncs': sum(w.name in SYNC_CALLS for w in waits),
            'ranges': range_times(raw),
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
              f'{r["kernel_ms"]:.2f} ms of kernels, host waiting {r["wait_ms"]:.2f} ms ({r["syncs"]} syncs)')
        for k, rr in sorted(r['ranges'].items()):
            print(f'  {k}: {rr["calls"]} calls, host {rr["host_ms"]:.2f} ms (waiting {rr["wait_ms"]:.2f} ms in '
                  f'{rr["waits"]} calls, {rr["syncs"]} syncs), kernels {rr["device_ms"]:.2f} ms, device span '
                  f'{rr["device_span_ms"]:.2f} ms')
        print(r['top_host'])
        print(r['top_device'])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
