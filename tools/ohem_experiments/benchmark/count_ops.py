"""Operators per training forward, by sampler variant: a GPU-cost proxy that runs on the CPU.

On a GPU a training iteration of these detectors is host-bound (docs/benchmark.md: on an H200 the
host spends ~49 ms issuing ~1,100 launches for ~19 ms of kernels), so what OHEM adds is roughly the
operators it dispatches. This counts every ATen operator dispatched during ``model.loss`` (forward and
losses, sampling and mining included; the backward is the same size for every variant, since all mine
the same budget) with a ``TorchDispatchMode``, once per variant on the same weights and batch.

By default the selection takes the path it takes on CUDA (device loss-NMS, batched selection) although
the tensors are on the CPU, so the counts are those a GPU run dispatches; ``--cpu-path`` counts the CPU
path (host loss-NMS) instead. A variant whose selection is a CUDA graph (``ours``, the default since
2026-11-27; ``ours_eager`` is without) counts the graph's replay as one operator (``cuda_graph_replay``),
and its input copies as they come.

``--gpu-kernels`` also takes the read-only pass's Triton paths (``fast_roi_align``, ``fast_roi_pool``,
``one_launch_levels``) as on a GPU although the tensors are on the CPU: each kernel launch counts as one
operator (``triton_launch``) and is stubbed (its output zeroed; the counts do not depend on the values), so
the extraction's operators are those a GPU run dispatches. Without it the CPU's extraction is counted (mmcv's
RoI layers, on RoIs in the features' dtype).

``--by-source N`` also attributes every operator to the innermost frame of ``mmdet_ohem`` (else of
mmdet/mmcv) that dispatched it, and prints, per variant, the N sources that add the most operators over
the first variant: where to look for the next cut.

Usage::

    python -m ohem_experiments.benchmark.count_ops r50_fpn --size 320 --variants random mmdet_ohem ours ours_per_image
    python -m ohem_experiments.benchmark.count_ops vgg16 --size 320 --variants random ours --by-source 15
    python -m ohem_experiments.benchmark.count_ops r50_fpn --size 800 1333 --variants ours ours_per_level --gpu-kernels
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .detectors import MODELS, VARIANTS, describe_variant, prepare, swap_sampler

__all__ = ['count_ops', 'main', 'source_table']


def _source() -> str:
    """``package/file.py:function`` of the innermost ``mmdet_ohem`` frame on the stack, else of the innermost
    mmdet/mmcv frame, else ``other``."""
    frame, fallback = sys._getframe(2), None
    while frame is not None:
        name = frame.f_code.co_filename.replace('\\', '/')
        for package in ('/mmdet_ohem/', '/mmdet/', '/mmcv/'):
            if package in name:
                where = package.strip('/') + '/' + name.split(package, 1)[1] + ':' + frame.f_code.co_name
                if package == '/mmdet_ohem/':
                    return where
                fallback = fallback or where
        frame = frame.f_back
    return fallback or 'other'


class _OpCounter(TorchDispatchMode):
    """Counts ATen operators (views and metadata ops included, as each costs a dispatch), and with
    ``by_source`` where they come from (:func:`_source`)."""

    def __init__(self, by_source: bool = False) -> None:
        super().__init__()
        self.ops: Counter = Counter()
        self.sources: Optional[Counter] = Counter() if by_source else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        if self.sources is not None:
            self.sources[_source()] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _gpu_selection_path(enabled: bool):
    """The selection's CUDA choice (device loss-NMS) on CPU tensors."""
    if not enabled:
        yield
        return
    from mmdet_ohem.selection import select as select_mod
    orig = select_mod.resolve_method

    def as_on_cuda(method, device, n):
        return orig(method, torch.device('cuda'), n) if method == 'auto' else orig(method, device, n)

    select_mod.resolve_method = as_on_cuda
    try:
        yield
    finally:
        select_mod.resolve_method = orig


@contextlib.contextmanager
def _graph_replay_as_one_launch(counter: _OpCounter):
    """On the CPU a :class:`~mmdet_ohem.selection.graph.CapturedSelection` runs its rule eagerly in place of
    a replay: count that as the one launch a CUDA graph replay is (``cuda_graph_replay``), not as its
    operators."""
    from torch.utils._python_dispatch import _disable_current_modes

    from mmdet_ohem.selection.graph import CapturedSelection
    orig = CapturedSelection.replay

    def replay(self):
        counter.ops['cuda_graph_replay'] += 1
        if counter.sources is not None:
            counter.sources['mmdet_ohem/selection/graph.py:replay'] += 1
        with _disable_current_modes():
            return orig(self)

    CapturedSelection.replay = replay
    try:
        yield
    finally:
        CapturedSelection.replay = orig


class _StubLaunch:
    """Stands in for a Triton kernel: ``kernel[grid](*args)`` counts one ``triton_launch`` and zeroes the output
    (argument ``out_index``) outside the counting mode."""

    def __init__(self, counter: '_OpCounter', out_index: int) -> None:
        self.counter, self.out_index = counter, out_index

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            from torch.utils._python_dispatch import _disable_current_modes
            self.counter.ops['triton_launch'] += 1
            if self.counter.sources is not None:
                self.counter.sources[_source()] += 1
            with _disable_current_modes():
                args[self.out_index].zero_()
        return launch


@contextlib.contextmanager
def _gpu_kernels(counter: Optional['_OpCounter'], enabled: bool):
    """The read-only pass's Triton paths taken on CPU tensors (``on_kernel_device``), their launches stubbed
    (:class:`_StubLaunch`); ``counter=None`` (the warm-up) stubs them uncounted."""
    if not enabled:
        yield
        return
    import mmdet_ohem.kernels.roi_align as ra
    import mmdet_ohem.kernels.roi_pool as rpool
    sink = counter if counter is not None else _OpCounter()
    saved = (rpool.on_kernel_device, ra._kernels, rpool._kernel)
    rpool.on_kernel_device = lambda t: True
    ra._kernels = lambda: {'f32': _StubLaunch(sink, 2), 'levels_f32': _StubLaunch(sink, 22)}  # out's positions
    rpool._kernel = lambda: _StubLaunch(sink, 3)
    try:
        yield
    finally:
        rpool.on_kernel_device, ra._kernels, rpool._kernel = saved


def count_ops(model: str, size: Sequence[int], variants: Sequence[str], gpu_path: bool = True,
              batch_size: int = 2, top: int = 12, by_source: bool = False,
              gpu_kernels: bool = False) -> Dict[str, dict]:
    """Per variant: ``ops`` (ATen operators in ``model.loss``), ``extra_per_image`` (ops beyond the first
    variant's, per image), ``triton_launches`` (with ``gpu_kernels``) and ``top`` (the most frequent
    operators); with ``by_source``, ``sources`` (operators per source, :func:`_source`) and
    ``added_by_source`` (per source, the operators beyond the first variant's, largest first; negative where
    the first variant has more).

    ``gpu_kernels``: the read-only pass's Triton paths as on a GPU, each launch one operator (see the module
    docstring).

    Raises:
        KeyError: Unknown model or variant.
    """
    size = size[0] if len(size) == 1 else tuple(size)
    prep = prepare(model, variants, size, batch_size=batch_size, device='cpu')
    out: Dict[str, dict] = {}
    base: Optional[int] = None
    with _gpu_selection_path(gpu_path):
        for v in variants:
            swap_sampler(prep.model, prep.samplers[v])
            torch.manual_seed(0)
            with torch.no_grad(), _gpu_kernels(None, gpu_kernels):
                prep.model.loss(prep.data['inputs'], prep.data['data_samples'])  # warm-up (lazy state)
            torch.manual_seed(0)
            counter = _OpCounter(by_source)
            with counter, torch.no_grad(), _graph_replay_as_one_launch(counter), _gpu_kernels(counter, gpu_kernels):
                prep.model.loss(prep.data['inputs'], prep.data['data_samples'])
            total = sum(counter.ops.values())
            base = total if base is None else base
            stats = getattr(prep.samplers[v], 'last_stats', None)
            out[v] = {'ops': total, 'extra_per_image': (total - base) / batch_size,
                      'candidates_last_image': int(stats.candidates) if stats is not None else None,
                      'triton_launches': counter.ops.get('triton_launch', 0),
                      'top': counter.ops.most_common(top)}
            if by_source:
                out[v]['sources'] = dict(counter.sources)
                first = out[variants[0]]['sources']
                added = {k: counter.sources.get(k, 0) - first.get(k, 0) for k in set(counter.sources) | set(first)}
                out[v]['added_by_source'] = sorted(((k, d) for k, d in added.items() if d),
                                                   key=lambda kv: (-kv[1], kv[0]))
    return out


def source_table(res: Dict[str, dict], variant: str, first: str, rows: int) -> str:
    """The ``rows`` sources that add the most operators to ``variant`` over ``first`` (markdown)."""
    lines = [f'Operators {variant} adds over {first}, by source (top {rows}):', '',
             '| source | added operators (2 images) |', '|---|---|']
    lines += [f'| `{k}` | {d:+d} |' for k, d in res[variant]['added_by_source'][:rows]]
    return '\n'.join(lines)


def table(res: Dict[str, dict], first: str) -> str:
    rows = ['| variant | sampler | ATen ops in model.loss | extra ops per image vs ' + first + ' |',
            '|---|---|---|---|']
    for v, r in res.items():
        rows.append(f"| {v} | {describe_variant(v)} | {r['ops']} | {r['extra_per_image']:.0f} |")
    return '\n'.join(rows)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: ``MODEL [--size H [W]] [--variants ...] [--cpu-path] [--out JSON]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('model', choices=sorted(MODELS))
    p.add_argument('--size', type=int, nargs='+', default=[320])
    p.add_argument('--variants', nargs='+', default=['random', 'mmdet_ohem', 'ours', 'ours_eager', 'ours_per_image'],
                   choices=sorted(VARIANTS))
    p.add_argument('--cpu-path', action='store_true', help="count the CPU selection path (host loss-NMS)")
    p.add_argument('--gpu-kernels', action='store_true',
                   help="take the read-only pass's Triton paths as on a GPU (each launch counted as one operator)")
    p.add_argument('--by-source', type=int, default=0, metavar='N',
                   help='also print the N sources (file:function) that add the most operators over the first variant')
    p.add_argument('--out', default=None, help='JSON output (the table is printed)')
    args = p.parse_args(argv)
    if len(args.size) not in (1, 2):
        p.error('--size takes H or H W')
    if args.by_source < 0:
        p.error(f'--by-source takes a number of rows >= 0, got {args.by_source}')
    res = count_ops(args.model, args.size, args.variants, gpu_path=not args.cpu_path, by_source=args.by_source > 0,
                    gpu_kernels=args.gpu_kernels)
    print(f'{args.model} {"x".join(map(str, args.size))}, batch 2, '
          f'{"CPU" if args.cpu_path else "GPU"} selection path, '
          f'{"GPU (Triton) read-only RoI layers" if args.gpu_kernels else "CPU read-only RoI layers"}')
    print(table(res, args.variants[0]))
    for v in args.variants[1:] if args.by_source else ():
        print()
        print(source_table(res, v, args.variants[0], args.by_source))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({'model': args.model, 'size': args.size, 'gpu_path': not args.cpu_path,
                                              'gpu_kernels': args.gpu_kernels, 'variants': res}, indent=1))


if __name__ == '__main__':
    main()
