"""The read-only pass's RoIPool (and RoIAlign) alone: mmcv's kernels against mmdet_ohem's Triton paths (a GPU only).

For each feature size, RoI set and dtype: the median time of mmcv's ``RoIPool`` layer with gradients off
(what the read-only pass ran before), of the bin ranges alone (mmcv's kernel on the two-channel coordinate
map, step 1 of :mod:`mmdet_ohem.kernels.roi_pool`) and of the whole Triton path (:func:`readonly_roi_pool`),
each timed with CUDA events over ``repeats`` calls after a warm-up, the variants interleaved; and whether
the two outputs are equal bit for bit (NaN where mmcv has NaN).

``--op align`` times the RoIAlign kernel (:mod:`mmdet_ohem.kernels.roi_align`: float32 arithmetic on fp16
features, what ``fast_roi_align=True``, the default, runs) against mmcv's fp16
``RoIAlign`` (``sampling_ratio=0``, aligned) on R50-FPN's four levels at 800x1333, each with RoIs of the sizes
mmdet's ``SingleRoIExtractor`` maps to it, and reports each one's largest difference from mmcv's float32 layer.

Usage (from ``tools/``)::

    python -m ohem_experiments.benchmark.roi_pool_timing --out roi_pool.json
    python -m ohem_experiments.benchmark.roi_pool_timing --op align --out roi_align.json
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
from typing import Callable, Dict, List, Sequence

import torch
from torch import Tensor

from .nms_timing import proposal_like_boxes

__all__ = ['main', 'time_roi_pool']

# (name, batch, channels, feature H, W, spatial scale): VGG16's conv5_3 at 600x1000 and at 800x1333
SIZES = {'vgg16_600x1000': (2, 512, 38, 63, 1 / 16), 'vgg16_800x1333': (2, 512, 50, 84, 1 / 16)}


def _rois(kind: str, per_image: int, batch: int, h: int, w: int, scale: float, seed: int) -> Tensor:
    img_h, img_w = h / scale, w / scale
    parts = []
    for b in range(batch):
        if kind == 'proposals':  # jittered boxes around objects, 20-250 px
            boxes, _ = proposal_like_boxes(per_image, width=img_w, height=img_h, seed=seed + b)
        else:  # 'anchors': a random-init RPN's proposals are about its anchors, 128-512 px
            g = torch.Generator().manual_seed(seed + b)
            wh = 2 ** (7 + 2 * torch.rand(per_image, 2, generator=g))
            ctr = torch.rand(per_image, 2, generator=g) * torch.tensor([img_w, img_h])
            boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img_w - 1)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img_h - 1)
        parts.append(torch.cat([boxes.new_full((per_image, 1), b), boxes], 1))
    return torch.cat(parts)


def _events_ms(fns: Dict[str, object], repeats: int) -> Dict[str, float]:
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(3):
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for k, fn in fns.items():  # interleaved
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times[k].append(start.elapsed_time(end))
    return {k: statistics.median(v) for k, v in times.items()}


def _add_launches(fns: Dict[str, Callable[[], Tensor]], launches: Sequence[str], run: Callable[..., Tensor],
                  reference: Tensor) -> int:
    """Adds ``run`` at each of the other launch shapes ``launches`` (``'<channels per program>x<warps>'``,
    passed as ``block_c`` and ``num_warps``) to the timed ``fns``; returns how many of their values differ
    from ``reference`` (a launch shape must not change a value)."""
    differ = 0
    for shape in launches:
        bc, nw = (int(v) for v in shape.split('x'))
        fns[shape] = functools.partial(run, block_c=bc, num_warps=nw)
        differ += int((fns[shape]() != reference).sum())
    return differ


def time_roi_pool(sizes: Sequence[str] = tuple(SIZES), kinds: Sequence[str] = ('anchors', 'proposals'),
                  dtypes: Sequence[str] = ('fp32', 'fp16'), per_image: int = 2000,
                  repeats: int = 50, launches: Sequence[str] = ()) -> List[dict]:
    """One row per (size, RoI set, dtype); see the module docstring. ``launches``: other launch shapes of
    the Triton kernel to time too, each ``'<channels per program>x<warps>'`` (e.g. ``'128x8'``)."""
    from mmcv.ops import RoIPool

    from mmdet_ohem.kernels import roi_pool as rp
    rows = []
    for size in sizes:
        b, c, h, w, scale = SIZES[size]
        for kind in kinds:
            for name in dtypes:
                dtype = {'fp32': torch.float32, 'fp16': torch.float16}[name]
                g = torch.Generator().manual_seed(0)
                feats = torch.randn(b, c, h, w, generator=g).relu().cuda().to(dtype)
                rois = _rois(kind, per_image, b, h, w, scale, seed=1).cuda().to(dtype)
                layer = RoIPool((7, 7), scale)
                with torch.no_grad():
                    want = layer(feats, rois)
                    got = rp.readonly_roi_pool(feats, rois, (7, 7), scale)
                    differ = int((got != want).sum()) if got is not None else -1
                    fns = {
                        'mmcv': lambda: layer(feats, rois),
                        'bounds': lambda: rp._bin_bounds(feats, rois, (7, 7), scale),
                        'triton': lambda: rp.readonly_roi_pool(feats, rois, (7, 7), scale),
                    }
                    differ += _add_launches(fns, launches, functools.partial(
                        rp.readonly_roi_pool, feats, rois, (7, 7), scale), want)
                    ms = _events_ms(fns, repeats)
                best = min(['triton', *launches], key=ms.get)
                rows.append(dict(size=size, features=[b, c, h, w], rois=kind, num_rois=int(rois.shape[0]),
                                 dtype=name, mmcv_ms=ms['mmcv'], bounds_ms=ms['bounds'], triton_ms=ms['triton'],
                                 speedup=ms['mmcv'] / ms['triton'], values_differ=differ,
                                 launches={k: ms[k] for k in launches},
                                 best=f'{rp.BLOCK_C}x{rp.NUM_WARPS}' if best == 'triton' else best))
                print(f"{size} {kind} {name}: mmcv {ms['mmcv']:.3f} ms, triton {ms['triton']:.3f} ms "
                      f"(bounds {ms['bounds']:.3f}), {differ} values differ", flush=True)
    return rows


# R50-FPN's levels at 800x1333 (B, C, H, W, spatial scale) and the RoI sides mmdet maps to each (px)
ALIGN_LEVELS = [((2, 256, 200, 334, 1 / 4), (16, 112)), ((2, 256, 100, 167, 1 / 8), (112, 224)),
                ((2, 256, 50, 84, 1 / 16), (224, 448)), ((2, 256, 25, 42, 1 / 32), (448, 800))]


def time_roi_align(per_image: int = 500, repeats: int = 50, launches: Sequence[str] = ()) -> List[dict]:
    """One row per R50-FPN level: mmcv's fp16 ``RoIAlign`` against the Triton kernel (gradients off),
    ``readonly_roi_align`` (float32 arithmetic on the fp16 features and float32 RoIs, what
    ``fast_roi_align=True`` runs: ``f32_max_err`` is its largest difference from mmcv's float32 layer on
    the same values, ``mmcv_fp16_max_err`` that of mmcv's fp16 layer). ``launches``: other launch shapes of
    the float32 kernel to time, each ``'<channels per program>x<warps>'`` (their values must equal the
    default launch's: ``f32_launch_differ``)."""
    from mmcv.ops import RoIAlign

    from mmdet_ohem.kernels import roi_align as ra
    rows = []
    for (b, c, h, w, scale), (lo, hi) in ALIGN_LEVELS:
        g = torch.Generator().manual_seed(0)
        feats = torch.randn(b, c, h, w, generator=g).cuda().half()
        parts = []
        for i in range(b):
            side = lo + (hi - lo) * torch.rand(per_image, 2, generator=g)
            ctr = torch.rand(per_image, 2, generator=g) * torch.tensor([w / scale, h / scale])
            boxes = torch.cat([ctr - side / 2, ctr + side / 2], 1)
            parts.append(torch.cat([boxes.new_full((per_image, 1), i), boxes], 1))
        rois32 = torch.cat(parts).cuda()
        rois = rois32.half()
        layer = RoIAlign((7, 7), scale, sampling_ratio=0)
        with torch.no_grad():
            want = layer(feats, rois)
            exact = layer(feats.float(), rois32)
            f32 = ra.readonly_roi_align(layer, feats, rois32)
            fns = {'mmcv': lambda: layer(feats, rois), 'triton_f32': lambda: ra.readonly_roi_align(layer, feats, rois32)}
            launch_differ = _add_launches(fns, launches, functools.partial(
                ra.roi_align_f32, feats, rois32, (7, 7), scale, 0, True), f32)
            ms = _events_ms(fns, repeats)
        best = min(['triton_f32', *launches], key=ms.get)
        rows.append(dict(features=[b, c, h, w], rois=f'{lo}-{hi} px', num_rois=int(rois.shape[0]), dtype='fp16',
                         mmcv_ms=ms['mmcv'], triton_f32_ms=ms['triton_f32'], speedup=ms['mmcv'] / ms['triton_f32'],
                         f32_max_err=float((f32.float() - exact).abs().max()),
                         mmcv_fp16_max_err=float((want.float() - exact).abs().max()),
                         launches={k: ms[k] for k in launches}, f32_launch_differ=launch_differ,
                         best=f'{ra.F32_BLOCK_C}x{ra.F32_NUM_WARPS}' if best == 'triton_f32' else best))
        r = rows[-1]
        print(f"align {(b, c, h, w)}: mmcv {ms['mmcv']:.3f} ms, triton f32 {ms['triton_f32']:.3f} ms (max err "
              f"{r['f32_max_err']:.2e} against mmcv fp16's {r['mmcv_fp16_max_err']:.2e})", flush=True)
    return rows


def align_table(rows: List[dict]) -> str:
    lines = ['| level features (B, C, H, W) | RoIs | mmcv fp16 RoIAlign ms | Triton float32 arithmetic ms | speed-up '
             '| max error vs float32 (Triton / mmcv fp16) | other launch shapes ms (best) |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {tuple(r['features'])} | {r['num_rois']} of {r['rois']} | {r['mmcv_ms']:.3f} "
                     f"| {r['triton_f32_ms']:.3f} | {r['speedup']:.2f}x | {r['f32_max_err']:.1e} / "
                     f"{r['mmcv_fp16_max_err']:.1e} | "
                     + (', '.join(f'{k}: {v:.3f}' for k, v in r['launches'].items()) or '-') + f" ({r['best']}) |")
    return '\n'.join(lines)


def table(rows: List[dict]) -> str:
    lines = ['| features (B, C, H, W) | RoIs | dtype | mmcv RoIPool ms | bin ranges ms | Triton path ms | speed-up '
             '| other launch shapes ms | values differing |', '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        other = ', '.join(f'{k}: {v:.3f}' for k, v in r.get('launches', {}).items()) or '-'
        lines.append(f"| {tuple(r['features'])} | {r['num_rois']} {r['rois']} | {r['dtype']} | {r['mmcv_ms']:.3f} "
                     f"| {r['bounds_ms']:.3f} | {r['triton_ms']:.3f} | {r['speedup']:.2f}x | {other} "
                     f"| {r['values_differ']} |")
    return '\n'.join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--op', choices=['pool', 'align'], default='pool',
                   help="'align': the experimental RoIAlign kernels on R50-FPN's levels instead")
    p.add_argument('--sizes', nargs='+', default=list(SIZES), choices=list(SIZES))
    p.add_argument('--dtypes', nargs='+', default=['fp32', 'fp16'], choices=['fp32', 'fp16'])
    p.add_argument('--per-image', type=int, default=2000)
    p.add_argument('--repeats', type=int, default=50)
    p.add_argument('--launches', nargs='*', default=[], help="other launch shapes of the Triton kernel to time, "
                   "each '<channels per program>x<warps>', e.g. 128x8")
    p.add_argument('--out', default=None, help='write the rows as JSON here (and the table beside it as .md)')
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit('roi_pool_timing needs a CUDA GPU (mmcv has no CPU RoIPool)')
    if args.op == 'align':
        rows = time_roi_align(per_image=args.per_image // 4, repeats=args.repeats, launches=args.launches)
        text = (f'# Read-only RoIAlign on fp16 features: mmcv vs Triton ({torch.cuda.get_device_name()}, '
                f'torch {torch.__version__})\n\nCommand: `python -m ohem_experiments.benchmark.roi_pool_timing --op align'
                f' --per-image {args.per_image} --repeats {args.repeats}'
                + (f' --launches {" ".join(args.launches)}' if args.launches else '')
                + '`; medians of CUDA-event times, gradients off; '
                'per level a quarter of --per-image RoIs per image.\n\n' + align_table(rows) + '\n')
    else:
        rows = time_roi_pool(args.sizes, dtypes=args.dtypes, per_image=args.per_image, repeats=args.repeats,
                             launches=args.launches)
        text = (f'# Read-only RoIPool: mmcv vs Triton ({torch.cuda.get_device_name()}, torch {torch.__version__})\n\n'
                f'Command: `python -m ohem_experiments.benchmark.roi_pool_timing'
                f' --per-image {args.per_image} --repeats {args.repeats}'
                + (f' --launches {" ".join(args.launches)}' if args.launches else '')
                + '`; medians of CUDA-event times, gradients off.\n\n'
                + table(rows) + '\n')
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), f, indent=1)
        with open(args.out.rsplit('.', 1)[0] + '.md', 'w') as f:
            f.write(text)


if __name__ == '__main__':
    main()
