"""Which of mmdet 3.3's two-stage families train with ``OHEMSampler``, next to ``RandomSampler`` as control.

Each family is mmdet's own shipped config with only the R-CNN sampler ``type`` changed (plus the CPU
necessities of :func:`quick_detectors.mmdet_config`: RoIAlign for RoIPool, no pretrained weights), a
budget of 64 RoIs per image, at most 128 RPN proposals, and two real training steps on a fixed synthetic
batch of two 128 px images. The result for each (family, sampler) is ``ok`` (finite losses),
``refused at build: ...`` or the exception of the first failing step.

On a GPU (``--device cuda``) the configs keep their own RoI budget, RPN proposals and RoI layers, the
images are 800x1333, and ``--precisions fp32 fp16 bf16`` also trains through mmengine's
``AmpOptimWrapper`` (``tools/train.py --amp``), one model per family and sampler, the precisions in turn.
Each row then also gives the peak memory and, for ``OHEMSampler``, how often each stage's selection ran as
a captured CUDA graph (the default GPU path) and whether a capture failed.

Run: ``PYTHONPATH=$PWD:$PWD/tools python -m ohem_experiments.compat_survey [--only htc sabl] [--json out]``
(GPU: ``... --device cuda --precisions fp32 fp16 bf16 --md families.md``; ``tools/gpu_check.sh``'s
``families`` step). docs/compatibility.md records the output; tests/test_compatibility.py runs the same
builds, and ``tests/test_cuda.py::test_mmdet_families_train_with_ohem_on_the_gpu`` the GPU survey.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .quick_detectors import build_detector, mmdet_config, synthetic_batch, wrapper_train_step

__all__ = ['Family', 'FAMILIES', 'PRECISIONS', 'REFUSED', 'family_config', 'markdown', 'problems', 'survey_family',
           'try_family']


@dataclass(frozen=True)
class Family:
    """One mmdet two-stage family: its shipped config and what its synthetic batch needs."""

    config: str
    with_mask: bool = False
    with_semantic: bool = False
    num_proposals: int = 0  # > 0: no RPN, proposals come with the data (Fast R-CNN)
    num_classes: int = 5
    #: Why mmdet's RandomSampler (the control) is not run on CUDA, or ``''``: a control that indexes out of
    #: bounds raises an IndexError on the CPU, but on a GPU it trips a device-side assert, which leaves the
    #: CUDA context unusable for every later family of the process.
    no_cuda_control: str = ''


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
    'crowddet': Family('crowddet/crowddet-rcnn_r50_fpn_8xb2-30e_crowdhuman.py', num_classes=1,
                       no_cuda_control='RandomSampler indexes out of bounds on its multi-instance targets '
                                       '(CPU: IndexError in random_sampler.py; the H200 survey of 2026-11-27: a '
                                       'device-side assert); CrowdDet needs its MultiInsRandomSampler'),
}


#: ``precisions``: ``fp32`` trains with plain SGD; ``fp16``/``bf16`` through mmengine's ``AmpOptimWrapper``,
#: exactly what ``tools/train.py --amp`` builds (autocast + GradScaler; it needs a GPU).
PRECISIONS = ('fp32', 'fp16', 'bf16')
_AMP_DTYPES = {'fp16': 'float16', 'bf16': 'bfloat16'}


def family_config(name: str, sampler_type: str = 'OHEMSampler', num: Optional[int] = 64,
                  rpn_max_per_img: Optional[int] = 128, roi_align: bool = True):
    """The family's shipped config with only the R-CNN sampler type changed (and the CPU edits).

    ``num`` / ``rpn_max_per_img``: the R-CNN sampler's RoI budget and the RPN's training proposals per image
    (``None``: the config's own, e.g. 512 and 1000 for Faster R-CNN); ``roi_align=False`` keeps ``RoIPool``
    layers (mmcv has no CPU RoIPool). A GPU survey keeps all three as shipped.
    """
    fam = FAMILIES[name]
    cfg = mmdet_config(fam.config, sampler_type=sampler_type, sampler=None if num is None else dict(num=num),
                       roi_align=roi_align)
    rpn_proposal = (cfg.model.get('train_cfg') or {}).get('rpn_proposal')
    if rpn_max_per_img is not None and rpn_proposal is not None and 'max_per_img' in rpn_proposal:
        rpn_proposal.max_per_img = rpn_max_per_img
    return cfg


def try_family(name: str, sampler_type: str, steps: int = 2, size: int = 128) -> str:
    """``'ok'``, ``'refused at build: ...'`` or ``'<Error>: ...'`` for one family and sampler (CPU, fp32)."""
    return survey_family(name, sampler_type, steps=steps, size=size)['results']['fp32']


def _ohem_samplers(model: torch.nn.Module) -> list:
    from mmdet_ohem.samplers import OHEMSampler
    samplers = getattr(getattr(model, 'roi_head', None), 'bbox_sampler', None)
    samplers = samplers if isinstance(samplers, (list, tuple)) else [samplers]
    return [s for s in samplers if isinstance(s, OHEMSampler)]


def survey_family(name: str, sampler_type: str, precisions: Sequence[str] = ('fp32', ), device: str = 'cpu',
                  steps: int = 2, size: Union[int, Sequence[int]] = 128, shipped: bool = False) -> Dict[str, Any]:
    """Builds the family once and runs ``steps`` training steps in each of ``precisions``, in that order.

    ``shipped``: the config's own RoI budget, RPN proposals and RoI layers (:func:`family_config` with
    ``None``/``False``), for a GPU; otherwise the CPU cuts (64 RoIs, 128 proposals, RoIAlign).

    Returns a JSON-ready dict: ``results`` (per precision: ``'ok'``, ``'non-finite: {...}'``, ``'refused at
    build: ...'``, ``'<Error>: ... (file:line)'`` or, for a control that cannot run on CUDA
    (:attr:`Family.no_cuda_control`), ``'not run on CUDA: ...'``); ``peak_mib`` (per precision that ran on CUDA: the
    largest ``torch.cuda.max_memory_allocated`` over its steps, what mmengine logs as ``memory``);
    ``graphs`` (for ``OHEMSampler``: per R-CNN stage, ``batched``, whether its images are mined together,
    the path a captured selection graph serves (other heads are mined one image at a time), ``cuda_graph``,
    the setting, and with it the graphs' ``captures``, ``replays``, ``fallbacks`` to the eager rule, and
    ``failed``, the capture error if one occurred; else ``None``).

    Raises:
        ValueError: On an unknown precision, or ``fp16``/``bf16`` without CUDA (mmengine's
            ``AmpOptimWrapper`` refuses to build there, so ``--amp`` training cannot run).
    """
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f'survey_family: unknown precision(s) {bad}; choose from {list(PRECISIONS)}')
    if any(p in _AMP_DTYPES for p in precisions) and not str(device).startswith('cuda'):
        raise ValueError(f'survey_family: precisions {[p for p in precisions if p in _AMP_DTYPES]} are `--amp` '
                         f"training (mmengine's AmpOptimWrapper), which needs CUDA; device is {device!r}")
    fam = FAMILIES[name]
    out: Dict[str, Any] = {'results': {}, 'peak_mib': {}, 'graphs': None}
    cuda = str(device).startswith('cuda')
    if cuda and sampler_type == 'RandomSampler' and fam.no_cuda_control:
        out['results'] = {p: f'not run on CUDA: {fam.no_cuda_control}' for p in precisions}
        return out
    if cuda:  # the previous models (mmdet's RoI heads and their samplers refer to each other: a cycle) freed
        gc.collect()
        torch.cuda.empty_cache()
    try:
        cfg = family_config(name, sampler_type, *((None, None, False) if shipped else ()))
        model = build_detector(cfg, device=device)
    except Exception as e:  # noqa: BLE001 - the survey reports every failure
        out['results'] = {p: f'refused at build: {type(e).__name__}: {_short(e)}' for p in precisions}
        return out
    try:
        data = synthetic_batch(model, size=size, with_mask=fam.with_mask, with_semantic=fam.with_semantic,
                               num_proposals=fam.num_proposals, num_classes=fam.num_classes)
    except Exception as e:  # noqa: BLE001
        out['results'] = {p: _error(e) for p in precisions}
        return out
    for precision in precisions:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        try:
            log = _steps(model, data, precision, steps)
            bad_logs = {k: v for k, v in log.items() if not math.isfinite(v)}
            out['results'][precision] = f'non-finite: {bad_logs}' if bad_logs else 'ok'
        except Exception as e:  # noqa: BLE001
            out['results'][precision] = _error(e)
        if cuda:
            out['peak_mib'][precision] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    samplers = _ohem_samplers(model)
    if samplers:
        out['graphs'] = [{'batched': s.batched, 'cuda_graph': s._graphs is not None,
                          **({} if s._graphs is None else
                             {'captures': s._graphs.captures, 'replays': s._graphs.replays,
                              'fallbacks': s._graphs.fallbacks, 'failed': s._graphs.failed})} for s in samplers]
    return out


def _steps(model: torch.nn.Module, data: dict, precision: str, steps: int) -> Dict[str, float]:
    """``steps`` training steps in ``precision`` (each on a fresh copy of ``data``: mmdet's RoI heads rename
    the proposals' fields in place); the last step's log vars. ``fp32``: plain SGD through mmengine's
    ``OptimWrapper`` (the same steps, bit for bit, as
    ``test_wrapper_train_step_is_a_train_step_through_an_optimizer_wrapper`` checks); ``fp16``/``bf16``: its
    ``AmpOptimWrapper``, what ``tools/train.py --amp`` builds."""
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    optim = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    wrapper = OptimWrapper(optimizer=optim) if precision == 'fp32' else \
        AmpOptimWrapper(optimizer=optim, dtype=_AMP_DTYPES[precision])
    log: Dict[str, float] = {}
    for _ in range(steps):
        log = wrapper_train_step(model, copy.deepcopy(data), wrapper)
    return log


#: The families OHEMSampler refuses at build, naming the head (docs/compatibility.md): PISA needs its
#: ScoreHLRSampler, Sparse R-CNN's head takes object queries, CrowdDet's multi-instance head its own sampler.
REFUSED = ('pisa', 'sparse_rcnn', 'crowddet')


def problems(results: Dict[str, Dict[str, Dict[str, Any]]], device: str = 'cpu') -> List[str]:
    """What is wrong in :func:`main`'s ``results`` (``family -> sampler -> survey_family(...)``): an
    ``OHEMSampler`` failure where ``RandomSampler`` (the control) trained in that precision, a family of
    :data:`REFUSED` that was not refused at build (or another that was), and, on CUDA, a stage mined
    together whose selection did not run as a captured CUDA graph (or whose capture failed)."""
    found = []
    for name, per_sampler in results.items():
        ohem, random = per_sampler.get('OHEMSampler'), per_sampler.get('RandomSampler')
        if ohem is None:
            continue
        refused = [p for p, r in ohem['results'].items() if r.startswith('refused at build')]
        if name in REFUSED:
            if len(refused) != len(ohem['results']):
                found.append(f'{name}: OHEMSampler was not refused at build: {ohem["results"]}')
            continue
        for p, r in ohem['results'].items():
            control = 'ok' if random is None else random['results'].get(p, 'ok')
            if r != 'ok' and control == 'ok':
                found.append(f'{name} {p}: OHEMSampler: {r} (RandomSampler: ok)')
        if refused or not str(device).startswith('cuda'):
            continue
        for stage, g in enumerate(ohem['graphs'] or []):
            if g['batched'] and g['cuda_graph'] and (g['failed'] or g['captures'] + g['replays'] == 0):
                found.append(f'{name} stage {stage}: the selection did not run as a CUDA graph ({_graph_cell(g)})')
    return found


def _graph_cell(g: Dict[str, Any]) -> str:
    """One stage's selection path: ``captures/replays/fallbacks``, ``per image`` or ``off``."""
    if not g['batched']:
        return 'per image'
    if not g['cuda_graph']:
        return 'off'
    return f'{g["captures"]}/{g["replays"]}/{g["fallbacks"]}' + (f' (capture failed: {g["failed"]})'
                                                                if g['failed'] else '')


def markdown(results: Dict[str, Dict[str, Dict[str, Any]]], precisions: Sequence[str]) -> str:
    """A table of :func:`main`'s results: a row per family and sampler."""
    head = ('| family | sampler | ' + ' | '.join(precisions)
            + ' | peak MiB | selection graph per stage (captures/replays/fallbacks) |')
    lines = [head, '|---|---|' + '---|' * len(precisions) + '---|---|']
    for name, per_sampler in results.items():
        for sampler, r in per_sampler.items():
            peak = ' / '.join(f'{r["peak_mib"][p]:.0f}' for p in precisions if p in r['peak_mib']) or '-'
            graphs = '-' if not r['graphs'] else ', '.join(_graph_cell(g) for g in r['graphs'])
            cells = [r['results'][p].replace('|', '\\|') for p in precisions]
            lines.append(f'| {name} | {sampler} | ' + ' | '.join(cells) + f' | {peak} | {graphs} |')
    return '\n'.join(lines) + '\n'


def _error(e: BaseException) -> str:
    where = traceback.extract_tb(e.__traceback__)[-1]
    return f'{type(e).__name__}: {_short(e)} ({where.filename.rsplit("/", 1)[-1]}:{where.lineno})'


def _short(e: Exception, limit: int = 300) -> str:
    text = ' '.join(str(e).split())
    return text if len(text) <= limit else text[:limit] + '...'


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--only', nargs='*', choices=list(FAMILIES), help='families to try (default: all)')
    p.add_argument('--samplers', nargs='*', default=['RandomSampler', 'OHEMSampler'])
    p.add_argument('--device', default='cpu', help='cpu (default) or cuda: on cuda the configs keep their own '
                   'RoI budget, RPN proposals and RoI layers, and the images default to 800x1333')
    p.add_argument('--precisions', nargs='+', default=['fp32'], choices=PRECISIONS,
                   help='fp32 (default); fp16/bf16: --amp training (CUDA), on the same model, in this order')
    p.add_argument('--size', type=int, nargs='+', default=None, help='image side, or H W (default: 128 on the '
                   'CPU, 800 1333 on CUDA)')
    p.add_argument('--steps', type=int, default=2, help='training steps per precision (default 2)')
    p.add_argument('--shipped', action='store_true', help="on the CPU too: the configs' own RoI budget, RPN "
                   'proposals and RoI layers (always on CUDA; RoIPool configs then need a GPU)')
    p.add_argument('--json', help='write the results here as JSON')
    p.add_argument('--md', help='write the results here as a markdown table')
    args = p.parse_args(argv)
    cuda = args.device.startswith('cuda')
    if any(x in _AMP_DTYPES for x in args.precisions) and not cuda:
        p.error(f'--precisions {" ".join(args.precisions)}: fp16/bf16 are --amp training, which needs '
                f'--device cuda (got {args.device!r})')
    if args.steps < 1:
        p.error(f'--steps must be at least 1, got {args.steps}')
    if args.size is not None and len(args.size) not in (1, 2):
        p.error(f'--size takes one side or H W, got {args.size}')
    size = (800, 1333) if args.size is None and cuda else 128 if args.size is None else \
        (args.size[0] if len(args.size) == 1 else tuple(args.size))
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')  # weight-init tables are noise here
    threads = torch.get_num_threads()
    try:
        if not cuda:
            torch.set_num_threads(1)  # as the CPU survey always ran
        results = _survey(args.only or list(FAMILIES), args, size, cuda)
    finally:
        torch.set_num_threads(threads)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'device': args.device, 'size': size, 'steps': args.steps, 'precisions': args.precisions,
                       'shipped': cuda or args.shipped, 'results': results}, f, indent=1)
    if args.md:
        Path(args.md).write_text(markdown(results, args.precisions))
    found = problems(results, args.device)
    print('\n'.join(['problems:'] + found) if found else 'no problems: OHEMSampler trains wherever RandomSampler '
          'does' + (', and every stage mined together ran its selection as a CUDA graph' if cuda else ''))
    return 1 if found else 0


def _survey(names: List[str], args: argparse.Namespace, size: Union[int, Tuple[int, int]],
            cuda: bool) -> Dict[str, Dict[str, Dict[str, Any]]]:
    results: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for i, name in enumerate(names):
        results[name] = {}
        for sampler in args.samplers:
            t0 = time.time()
            r = survey_family(name, sampler, args.precisions, args.device, args.steps, size,
                              shipped=cuda or args.shipped)
            results[name][sampler] = r
            graphs = '' if not r['graphs'] else ' graphs ' + ', '.join(_graph_cell(g) for g in r['graphs'])
            peak = ' peak ' + '/'.join(f'{v:.0f}' for v in r['peak_mib'].values()) + ' MiB' if r['peak_mib'] else ''
            print(f'[{i + 1}/{len(names)}] {name:16s} {sampler:14s} {time.time() - t0:5.1f}s '
                  + ' '.join(f'{k}: {v}' for k, v in r['results'].items()) + peak + graphs, flush=True)
    return results


if __name__ == '__main__':
    sys.exit(main())
