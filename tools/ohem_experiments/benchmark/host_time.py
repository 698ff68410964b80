"""Host time OHEM adds to the RoI head's ``loss``, measured on the CPU: the other GPU-cost proxy.

On a GPU these detectors' training iterations are host-bound (docs/benchmark.md), so what OHEM costs there
is what it makes the host do: the operators it dispatches (counted by :mod:`.count_ops`) and the Python
around them, which no operator count sees. This times the host's side of ``roi_head.loss`` on the CPU with
the device's work made negligible:

- R50-FPN's structure (ResNet + FPN with 5 levels, 4 RoIAlign levels, ``Shared2FCBBoxHead``) with tiny
  channels (ResNet-18 stages of 8-64 channels, 4 FPN channels, 8 fc units), so no operator has work to
  speak of;
- ``--proposals`` RPN proposals per image (default 40) and an R-CNN budget of ``--num`` RoIs (default 16),
  so the operators' sizes stay small too (the host's work per operator does not depend on them on a GPU);
- the selection takes the path it takes on CUDA (device loss-NMS, batched), the read-only pass its Triton
  paths with each launch stubbed (its output zeroed: a stub costs a few microseconds, a real Triton launch
  tens), and a CUDA graph's replay returns the outputs of its first run (a replay is one call on a GPU);
- the backbone, neck and RPN run once; each timed call is ``roi_head.loss`` on the same features and
  proposals (the assigner, the sampler, the training forward of the sampled RoIs and their losses).

The variants are interleaved round by round; the table gives each variant's median and the median of its
per-round difference to the first variant, with a distribution-free 95% interval
(:func:`~.timing.median_ci`). It is a proxy: a faster host (the GPU machine's) shrinks every number, and
CUDA's launch costs are not in it. Use it to compare code changes on one machine.

Usage::

    python -m ohem_experiments.benchmark.host_time --variants random mmdet_ohem ours ours_per_level
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch

from . import detectors
from .count_ops import _gpu_kernels, _gpu_selection_path
from .detectors import VARIANTS, describe_variant, prepare, swap_sampler
from .timing import median_ci

__all__ = ['host_time', 'main', 'table', 'tiny_r50_fpn']


def tiny_r50_fpn(cfg) -> None:
    """R50-FPN's detector with tiny channels (in place): the same modules and code paths, little work."""
    m = cfg.model
    m.backbone.update(depth=18, base_channels=8, stem_channels=8)
    m.neck.update(in_channels=[8, 16, 32, 64], out_channels=4)
    m.rpn_head.update(in_channels=4, feat_channels=4)
    m.roi_head.bbox_roi_extractor.out_channels = 4
    m.roi_head.bbox_head.update(in_channels=4, fc_out_channels=8)


@contextlib.contextmanager
def _tiny_model(proposals: int, num: int) -> Iterator[None]:
    original = detectors.load_config

    def load(model: str, device: str):
        cfg, notes = original(model, device)
        tiny_r50_fpn(cfg)
        cfg.model.train_cfg.rpn_proposal.max_per_img = proposals
        cfg.model.train_cfg.rcnn.sampler.num = num
        return cfg, notes + [f'tiny channels, {proposals} proposals per image, {num} RoIs per image']

    detectors.load_config = load
    try:
        yield
    finally:
        detectors.load_config = original


@contextlib.contextmanager
def _replays_memoised() -> Iterator[None]:
    """A :class:`~mmdet_ohem.selection.graph.CapturedSelection` replay returns its first run's outputs (its
    static outputs, as a CUDA graph's replay does) instead of running the rule on the CPU each time."""
    from mmdet_ohem.selection.graph import CapturedSelection
    original, memo = CapturedSelection.replay, {}

    def replay(self):
        if id(self) not in memo:
            memo[id(self)] = (self, original(self))  # keeps self alive, so its id stays its own
        return memo[id(self)][1]

    CapturedSelection.replay = replay
    try:
        yield
    finally:
        CapturedSelection.replay = original


def host_time(variants: Sequence[str], rounds: int = 60, size: Sequence[int] = (256, 256), proposals: int = 40,
              num: int = 16, warmup: int = 3, threads: int = 1) -> Dict[str, dict]:
    """Per variant: ``times_s`` (one ``roi_head.loss`` per round), ``median_ms``, and for all but the first
    variant ``added_ms`` (median of the per-round difference to the first variant) with ``added_ci_ms`` (95%).

    Raises:
        ValueError: If ``rounds``, ``proposals`` or ``num`` is not positive, or a variant is unknown.
    """
    if rounds <= 0 or proposals <= 0 or num <= 0:
        raise ValueError(f'host_time: rounds, proposals and num must be positive, got {rounds}, {proposals}, {num}')
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f'host_time: unknown variants {unknown}; known: {sorted(VARIANTS)}')
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _tiny_model(proposals, num):
            prep = prepare('r50_fpn', variants, tuple(size), batch_size=2, device='cpu')
        model, samples = prep.model, prep.data['data_samples']
        with torch.no_grad():
            x = model.extract_feat(prep.data['inputs'])
            rpn_samples = copy.deepcopy(samples)
            for s in rpn_samples:
                s.gt_instances.labels = torch.zeros_like(s.gt_instances.labels)
            _, proposals_list = model.rpn_head.loss_and_predict(
                x, rpn_samples, proposal_cfg=model.train_cfg.get('rpn_proposal', model.test_cfg.rpn))

        def once(v: str) -> float:
            swap_sampler(model, prep.samplers[v])
            results = copy.deepcopy(proposals_list)  # roi_head.loss renames their fields
            start = time.perf_counter()
            model.roi_head.loss(x, results, samples)
            return time.perf_counter() - start

        times: Dict[str, List[float]] = {v: [] for v in variants}
        with _gpu_selection_path(True), _gpu_kernels(None, True), _replays_memoised(), torch.no_grad():
            for v in variants:
                for _ in range(warmup):
                    once(v)
            for _ in range(rounds):
                for v in variants:
                    times[v].append(once(v))
    finally:
        torch.set_num_threads(threads_before)
    first = times[variants[0]]
    out: Dict[str, dict] = {}
    for v in variants:
        rec = {'times_s': times[v], 'median_ms': statistics.median(times[v]) * 1e3,
               'rows_per_image': len(proposals_list[0])}
        if v != variants[0]:
            diffs = [(a - b) * 1e3 for a, b in zip(times[v], first)]
            rec['added_ms'] = statistics.median(diffs)
            rec['added_ci_ms'] = median_ci(diffs)
        out[v] = rec
    return out


def table(res: Dict[str, dict], first: str) -> str:
    rows = [f'| variant | sampler | roi_head.loss, host (ms) | added over {first} (ms, 95% interval) |',
            '|---|---|---|---|']
    for v, r in res.items():
        if 'added_ms' in r:
            ci = r['added_ci_ms']
            added = f"{r['added_ms']:+.3f}" + (f' ({ci[0]:+.3f} to {ci[1]:+.3f})' if ci else '')
        else:
            added = '-'
        rows.append(f"| {v} | {describe_variant(v)} | {r['median_ms']:.3f} | {added} |")
    return '\n'.join(rows)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: ``[--variants ...] [--rounds N] [--size H W] [--proposals P] [--num R] [--out JSON]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--variants', nargs='+', default=['random', 'mmdet_ohem', 'ours'], choices=sorted(VARIANTS))
    p.add_argument('--rounds', type=int, default=60)
    p.add_argument('--size', type=int, nargs=2, default=[256, 256], metavar=('H', 'W'))
    p.add_argument('--proposals', type=int, default=40, help='RPN proposals kept per image')
    p.add_argument('--num', type=int, default=16, help='the R-CNN budget: RoIs per image')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--out', default=None, help='JSON output (the table is printed)')
    args = p.parse_args(argv)
    if args.rounds <= 0 or args.proposals <= 0 or args.num <= 0 or args.threads <= 0:
        p.error(f'--rounds, --proposals, --num and --threads must be positive, got {args.rounds}, {args.proposals}, '
                f'{args.num}, {args.threads}')
    res = host_time(args.variants, args.rounds, args.size, args.proposals, args.num, threads=args.threads)
    machine = f'{platform.processor() or platform.machine()}, torch {torch.__version__}'
    print(f'tiny-channel R50-FPN, {"x".join(map(str, args.size))}, batch 2, {args.proposals} proposals and '
          f'{args.num} RoIs per image, {args.rounds} rounds, {args.threads} thread(s), {machine}')
    print(table(res, args.variants[0]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({'size': args.size, 'proposals': args.proposals, 'num': args.num,
                                              'rounds': args.rounds, 'threads': args.threads, 'machine': machine,
                                              'variants': res}, indent=1))


if __name__ == '__main__':
    main()
