"""Command line of ``tools/benchmark.py`` (``make bench ARGS='...'``)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .report import CONFIDENCE, check_targets, machine_info, model_table, nms_table, targets_table, time_ratio
from .detectors import (DEFAULT_VARIANTS, GPU_VARIANTS, LEGACY_CUDA_GRAPH_DEFAULT, MODELS, PRECISIONS, VARIANTS,
                        describe_variant, prepare, set_threads)

__all__ = ['main', 'parse_args']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses the benchmark's command line."""
    p = argparse.ArgumentParser(
        description="OHEM's cost per training iteration and in memory: RandomSampler baseline, mmdet's "
                    'built-in OHEM, ours with and without loss-NMS; interleaved, same weights and inputs.')
    p.add_argument('--models', nargs='*', default=['r50_fpn', 'vgg16'], choices=sorted(MODELS),
                   help='models to time (none: only the loss-NMS timing)')
    p.add_argument('--variants', nargs='+', default=None, choices=sorted(VARIANTS),
                   help='sampler variants; ratios are to "random" (include it). Default: '
                        f'{" ".join(DEFAULT_VARIANTS)} on CPU, {" ".join(GPU_VARIANTS)} on CUDA')
    p.add_argument('--size', type=int, nargs='+', default=[320],
                   help='input size in pixels: SIDE (square) or HEIGHT WIDTH, e.g. 800 1333 or 600 1000 '
                        '(320 = the published CPU tables)')
    p.add_argument('--precision', nargs='+', default=['fp32'], choices=sorted(PRECISIONS),
                   help='training precision(s), each a separate run: fp32; fp16 = autocast + GradScaler '
                        '(as tools/train.py --amp); bf16 = bf16 autocast')
    p.add_argument('--profile-rounds', type=int, default=1,
                   help='untimed, synchronised iterations per variant for the breakdown (0: none)')
    p.add_argument('--batch', type=int, default=2, help='images per iteration')
    p.add_argument('--num-items', nargs='+', type=int, default=[6, 4], help='gt boxes per image')
    p.add_argument('--iters', type=int, default=3, help='timed iterations per variant (at most, with --time-budget)')
    p.add_argument('--time-budget', type=float, default=None, metavar='SECONDS',
                   help='per model and precision: end the timed rounds with the first round that ends SECONDS '
                        'after they began (at most --iters rounds), so the rounds fit the time on a machine of '
                        'unknown speed')
    p.add_argument('--warmup', type=int, default=1, help='untimed warm-up rounds')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (or 'cuda:N')")
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: all cores)')
    p.add_argument('--memory-iters', type=int, default=1,
                   help='iterations per fresh process for the CPU peak-memory measurement')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    p.add_argument('--nms-sizes', nargs='+', type=int, default=[2000, 10000])
    p.add_argument('--nms-repeats', type=int, default=5)
    p.add_argument('--no-nms', action='store_true', help='skip the loss-NMS-alone timing')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='results/bench/benchmark.json',
                   help='JSON output; the markdown report goes next to it (.md)')
    p.add_argument('--rerender', metavar='JSON', default=None,
                   help="measure nothing: rebuild a saved run's tables and target checks from its raw "
                        'per-iteration samples with this version of the report (new columns), and rewrite '
                        'that JSON and its markdown')
    p.add_argument('--compare', nargs='+', metavar=('A B', 'JSON'), default=None,
                   help='measure nothing: print variant A\'s time over variant B\'s (paired per round, with its '
                        '95%% CI) for every model and precision of the saved runs JSON..., e.g. '
                        '--compare ours_eager ours results/gpu/.../bench_vgg16.json')
    args = p.parse_args(argv)
    if args.compare is not None and len(args.compare) < 3:
        p.error('--compare takes two variant names and at least one benchmark JSON')
    if args.variants is None:
        args.variants = list(GPU_VARIANTS if args.device.startswith('cuda') else DEFAULT_VARIANTS)
    if 'random' not in args.variants:
        p.error('--variants must include "random" (the baseline the ratios refer to)')
    if len(args.size) == 1:
        args.size = args.size * 2
    if args.iters < 1 or args.warmup < 0 or args.batch < 1 or len(args.size) != 2 or min(args.size) < 32:
        p.error(f'need --iters >= 1, --warmup >= 0, --batch >= 1, --size SIDE or HEIGHT WIDTH >= 32; got '
                f'iters={args.iters}, warmup={args.warmup}, batch={args.batch}, size={args.size}')
    if args.time_budget is not None and not args.time_budget > 0:
        p.error(f'--time-budget must be a positive number of seconds, got {args.time_budget}')
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _memory(args: argparse.Namespace, model: str, timings: Dict, precision: str = 'fp32') -> Dict[str, dict]:
    """Peak memory per variant: CUDA from the timed iterations, CPU from fresh processes."""
    if args.no_memory:
        return {}
    if args.device.startswith('cuda'):
        return {v: {'peak_mb': statistics.median(t.cuda_peak_mb),
                    'iter_peak_mb': statistics.median(t.cuda_iter_peak_mb),
                    'method': 'torch.cuda.max_memory_allocated (median over timed iterations)'}
                for v, t in timings.items()}
    from .memory import measure_cpu_peak
    from .timing import Progress

    out = {}
    progress = Progress(len(args.variants), f'{model} memory')
    for v in args.variants:
        r = measure_cpu_peak(model, v, args.size, args.batch, args.num_items, args.memory_iters, args.seed,
                             args.threads, precision=precision)
        out[v] = {'peak_mb': r['peak_rss_mb'], 'iter_peak_mb': r['iter_peak_mb'],
                  'rss_before_mb': r['rss_before_mb'], 'method': r['method']}
        progress.step(f'{v} peak {r["peak_rss_mb"]:.0f} MB')
    return out


class _Terminated:
    """Turns SIGTERM (what ``timeout`` sends) into a flag the timing loop polls, so a run cut off by its
    caller's time limit still reports its complete rounds instead of dying with nothing written."""

    def __init__(self) -> None:
        self.received = False

    def __call__(self) -> bool:
        return self.received

    @contextlib.contextmanager
    def installed(self) -> Iterator['_Terminated']:
        def handler(signum, frame):
            self.received = True
            _log('SIGTERM: the benchmark stops after the running iteration and writes what it measured')

        try:
            previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: no handler, the run is not stoppable this way
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


def run_model(args: argparse.Namespace, model: str, precision: str = 'fp32',
              stop: Optional[Callable[[], bool]] = None) -> Optional[dict]:
    """Times and measures every variant on ``model`` in ``precision``; returns the JSON record (``rounds``:
    the timed rounds it got; ``stopped``: whether ``stop()`` ended them), or ``None`` where ``stop()`` ended
    the run before a timed round was complete."""
    from .timing import time_variants

    prep = prepare(model, args.variants, args.size, args.batch, args.num_items, args.device, args.seed,
                   precision=precision)
    timings = time_variants(prep, args.variants, args.iters, args.warmup, args.device, args.seed,
                            f'{model} {precision}', args.profile_rounds, args.time_budget, stop)
    del prep
    stopped = bool(stop and stop())
    if not any(t.times for t in timings.values()):
        return None
    memory = _memory(args, model, timings, precision)
    spec = MODELS[model]
    samplers = {v: describe_variant(v) for v in timings}
    return {'model': model, 'precision': precision, 'label': f'{spec.label}, {precision}', 'config': spec.config,
            'notes': load_notes(model, args.device), 'sampler_budget': sampler_budget(model, args.device),
            'samplers': samplers, 'timings': {v: t.as_dict() for v, t in timings.items()}, 'memory': memory,
            'rounds': len(timings[args.variants[0]].times), 'stopped': stopped,
            **derived(model, precision, timings, memory, args.device, samplers)}


def derived(model: str, precision: str, timings: Dict, memory: Dict[str, dict], device: str,
            samplers: Dict[str, str]) -> dict:
    """What the report derives from one model's measurements: target checks and the two tables
    (``samplers``: each variant's description as run)."""
    checks = check_targets(model, timings, memory, device, precision)
    return {'targets': checks, 'table': model_table(timings, memory, samplers), 'targets_table': targets_table(checks)}


def load_notes(model: str, device: str) -> List[str]:
    """What the benchmark changed in the model's config."""
    from .detectors import load_config
    return load_config(model, device)[1]


def sampler_budget(model: str, device: str) -> dict:
    """The model's own sampler budget, shared by every variant."""
    from .detectors import base_sampler_settings, load_config
    return base_sampler_settings(load_config(model, device)[0])


def _rounds_text(a: dict) -> str:
    """The report's words for the timed rounds asked for (``a``: the run's arguments)."""
    if a.get('time_budget') is None:
        return f"{a['iters']} timed iterations"
    return (f"up to {a['iters']} timed iterations, as many as fit {a['time_budget']:g} s of timed rounds per model "
            f"and precision (`--time-budget`; each section gives its rounds),")


def render(result: dict) -> str:
    """The whole markdown report."""
    m, a = result['machine'], result['args']
    lines = ['# OHEM benchmark', '',
             f"Command: `{result['command']}`  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
             f"mmcv {m['mmcv']}, mmdet {m['mmdet']}, device {m['device']}"
             + (f", GPU {m['gpu']}" if 'gpu' in m else '') + '  ',
             f"Load average before / after: {result['load_before']} / {result['load_after']}  ",
             f"Input: batch {a['batch']} x {a['size'][0]}x{a['size'][1]} (HxW) synthetic images "
             f"(mmdet.testing.demo_mm_inputs, {a['num_items']} gt boxes), {_rounds_text(a)} per "
             f"variant after {a['warmup']} warm-up round(s), interleaved round-robin; medians. "
             + ('Timed with CUDA events, nothing synchronised inside an iteration; ' if m['device'].startswith('cuda')
                else '')
             + f"breakdown from {a['profile_rounds']} separate synchronised iteration(s) per variant.", '']
    lines += [f'**{result[note]}**\n' for note in ('partial', 'stopped') if result.get(note)]
    if result.get('rerendered'):
        lines += [f"Tables re-rendered from this run's raw samples by a later version: `{result['rerendered']}`.", '']
    for name, error in (result.get('triton_fallbacks') or {}).items():
        lines += [f"**The read-only pass's Triton {name} failed in this run ({error}); mmcv's layer ran in its "
                  f"place from then on, so the variants that use it were timed partly or wholly with mmcv's.**", '']
    for r in result['models']:
        rounds = f" {r['rounds']} timed rounds{' (stopped by SIGTERM)' if r.get('stopped') else ''}." \
            if 'rounds' in r else ''
        lines += [f"## {r['label']}", '', f"Config `{r['config']}`; {'; '.join(r['notes'])}; "
                  f"sampler budget {r['sampler_budget']} for every variant.{rounds}", '', r['table'], '',
                  r['targets_table'], '']
    if result.get('skipped'):
        lines += [f'Skipped: {s}' for s in result['skipped']] + ['']
    if result.get('nms'):
        lines += [f"## Loss-NMS alone (proposal-like boxes, IoU 0.7, {m['device']})", '', nms_table(result['nms']), '']
    if result.get('memory_method'):
        lines += [f"Peak memory: {result['memory_method']}.", '']
    return '\n'.join(lines)


def rerender(path: str) -> dict:
    """Rebuilds the tables and target checks of the benchmark JSON at ``path`` from its raw samples.

    The measurements (times, breakdown, memory) are left as they are; only what the report derives from
    them is recomputed, so a run made by an older version gains the current columns. The JSON and its
    markdown (``.md`` beside it) are rewritten, and the markdown names the re-rendering command.

    Raises:
        ValueError: If the file is not a benchmark JSON (no ``models`` with raw ``timings``).
    """
    from .timing import VariantTiming
    out = Path(path)
    result, models = _saved_run(path, '--rerender', ('timings', 'memory'))
    for r in models:
        timings = {v: VariantTiming.from_dict(d) for v, d in r['timings'].items()}
        # runs saved before the descriptions were: OHEMSampler's defaults of then (the selection eager)
        samplers = r.get('samplers') or {v: describe_variant(v, LEGACY_CUDA_GRAPH_DEFAULT) for v in timings}
        r.update(derived(r['model'], r['precision'], timings, r['memory'], result['machine']['device'], samplers))
    result['rerendered'] = f'python tools/benchmark.py --rerender {path}'
    write_report(result, out)
    return result


def _saved_run(path: str, flag: str, keys: Sequence[str]) -> Tuple[dict, List[dict]]:
    """The benchmark JSON at ``path`` and its per-model records, each of which must hold ``keys``.

    Raises:
        ValueError: Naming ``flag`` and ``path``, if the file is not such a JSON.
    """
    result = json.loads(Path(path).read_text())
    models = result.get('models') if isinstance(result, dict) else None
    if not models or not all(isinstance(r, dict) and all(k in r for k in keys) for r in models):
        raise ValueError(f'{flag}: {path} is not a benchmark JSON with raw timings per model')
    return result, models


def compare(a: str, b: str, paths: Sequence[str]) -> dict:
    """Prints (and returns, by file) a markdown table of ``a``'s iteration time over ``b``'s in saved runs:
    the median of the per-round ratios with its 95% interval (:func:`~.report.time_ratio`), and the two
    medians' difference in ms. Nothing is measured or rewritten.

    Raises:
        ValueError: If a file is not a benchmark JSON, or a model record lacks ``a`` or ``b``.
    """
    from .timing import VariantTiming
    rows = [f'| run | model | precision | rounds | {a} / {b} (paired, {CONFIDENCE:.0%} CI) | {b} − {a} (medians) |',
            '|---|---|---|---|---|---|']
    out: dict = {}
    for path in paths:
        for r in _saved_run(path, '--compare', ('timings', ))[1]:
            missing = [v for v in (a, b) if v not in r['timings']]
            if missing:
                raise ValueError(f"--compare: {path} ({r['model']}, {r['precision']}) has no variant {missing}; "
                                 f"it has {sorted(r['timings'])}")
            ta, tb = (VariantTiming.from_dict(r['timings'][v]) for v in (a, b))
            value, ci = time_ratio(ta, tb)
            saved_ms = (tb.median - ta.median) * 1e3
            out.setdefault(path, []).append({'model': r['model'], 'precision': r['precision'], 'ratio': value,
                                             'ci': ci, 'saved_ms': saved_ms})
            interval = f' ({ci[0]:.3f}–{ci[1]:.3f})' if ci else ''
            rows.append(f"| {path} | {r['model']} | {r['precision']} | {len(ta.times)} | {value:.3f}×{interval} "
                        f"| {saved_ms:+.2f} ms |")
    print('\n'.join(rows))
    return out


def write_report(result: dict, out: Path, echo: bool = True) -> None:
    """Prints (``echo``) the markdown report of ``result`` and writes ``out`` (JSON) and the markdown beside it."""
    report = render(result)
    if echo:
        print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix('.md').write_text(report + '\n')


def _measure(args: argparse.Namespace, result: dict, out: Path, stop: Callable[[], bool]) -> None:
    """Times every model and precision of ``args`` into ``result['models']``, writing ``out`` (marked
    ``partial``) after each, so a run killed later keeps what it finished; stops once ``stop()`` is true."""
    settings = [(m, p) for m in args.models for p in args.precision]
    for i, (model, precision) in enumerate(settings):
        if stop():
            result['skipped'] += [f'{m} {p}: not run (stopped by SIGTERM)' for m, p in settings[i:]]
            return
        if not MODELS[model].exists():
            if precision == args.precision[0]:
                result['skipped'].append(f'{model}: config {MODELS[model].config} not present')
                _log(f'skipping {model}: config not present')
            continue
        _log(f'== {model} {precision}: {len(args.variants)} variants x ({args.warmup} warm-up + '
             + (f'up to {args.iters}, {args.time_budget:g} s' if args.time_budget else f'{args.iters}')
             + ') iterations')
        record = run_model(args, model, precision, stop)
        if record is None:
            result['skipped'].append(f'{model} {precision}: stopped by SIGTERM before a complete timed round')
        else:
            result['models'].append(record)
        if args.device.startswith('cuda'):
            import torch
            torch.cuda.empty_cache()
        if i + 1 < len(settings):
            write_report({**result, 'load_after': [round(x, 2) for x in os.getloadavg()],
                          'partial': f'Partial report: {i + 1} of {len(settings)} settings measured so far.'},
                         out, echo=False)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the benchmark, prints the markdown report, writes JSON + markdown; returns the record."""
    args = parse_args(argv)
    if args.rerender:
        return rerender(args.rerender)
    if args.compare:
        return compare(*args.compare[:2], args.compare[2:])
    threads = set_threads(args.threads)
    os.environ.setdefault('OMP_NUM_THREADS', str(threads))  # memory children use the same count
    t0 = time.perf_counter()
    result: dict = {'command': 'python tools/benchmark.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
                    'args': vars(args), 'machine': machine_info(args.device),
                    'load_before': [round(x, 2) for x in os.getloadavg()], 'models': [], 'skipped': []}
    out = Path(args.out)
    terminated = _Terminated()
    with terminated.installed():
        _measure(args, result, out, terminated)
    if terminated():
        result['stopped'] = (f"Stopped by SIGTERM (e.g. a caller's time limit) after {time.perf_counter() - t0:.0f} s: "
                             'the setting it stopped in keeps the complete rounds it got, settings not reached are '
                             'listed under Skipped, and the loss-NMS timing did not run.')
    elif not args.no_nms:
        from .nms_timing import time_loss_nms
        budgets = sorted({int(r['sampler_budget']['num']) for r in result['models']} or {64, 512})
        _log('== loss-NMS alone')
        result['nms'] = time_loss_nms(args.nms_sizes, budgets, repeats=args.nms_repeats, device=args.device)
    from mmdet_ohem.kernels.roi_pool import FAILED
    result['triton_fallbacks'] = dict(FAILED)  # Triton paths that failed and fell back to mmcv's layers
    mems = {m['method'] for r in result['models'] for m in r['memory'].values()}
    result['memory_method'] = '; '.join(sorted(mems))
    result['load_after'] = [round(x, 2) for x in os.getloadavg()]
    result['wall_s'] = time.perf_counter() - t0
    write_report(result, out)
    _log(f'wrote {out} and {out.with_suffix(".md")} in {result["wall_s"]:.0f}s')
    return result
