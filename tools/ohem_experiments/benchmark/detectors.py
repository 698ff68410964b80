"""What the benchmark runs: a model built once, a fixed batch, and the sampler variants to compare."""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from mmdet_ohem.config_tools import config_path, drop_pretrained, rcnn_train_cfgs, set_rcnn_sampler, use_roi_align
from ..quick_detectors import build_detector, synthetic_batch

__all__ = ['MODELS', 'VARIANTS', 'PRECISIONS', 'GPU_VARIANTS', 'RPN_MINED', 'LEGACY_CUDA_GRAPH_DEFAULT', 'ModelSpec',
           'Prepared', 'WithRPNMiner',
           'base_sampler_settings', 'describe_variant', 'load_config', 'prepare', 'sampler_cfg', 'swap_sampler']

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class ModelSpec:
    """A detector config the benchmark knows.

    Attributes:
        config: mmengine config path (``mmdet::...`` for mmdet's shipped configs, else repo-relative).
        label: Human-readable name for tables.
        neg_iou_thr: Optional override of the R-CNN assigner's ``neg_iou_thr`` (``bg_lo``, ``0.5``).
    """

    config: str
    label: str
    neg_iou_thr: Optional[Tuple[float, float]] = None

    def path(self) -> str:
        """The config file (``mmdet::`` names resolve to mmdet's shipped copy; else repo-relative)."""
        return config_path(self.config if '::' in self.config else str(REPO_ROOT / self.config))

    def exists(self) -> bool:
        """Whether the config file is present."""
        try:
            return Path(self.path()).is_file()
        except FileNotFoundError:
            return False


MODELS: Dict[str, ModelSpec] = {
    'r50_fpn': ModelSpec('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', "R50-FPN Faster R-CNN (mmdet's)"),
    # The model file every VGG16 config inherits, with the OHEM configs' assigner (bg_lo = 0: every RoI
    # with IoU < 0.5 is a background candidate), as in configs/ohem/faster_rcnn_vgg16_ohem_voc07.py.
    # Only the model file is loaded (identical to the full config's model), so no dataset paths are needed.
    'vgg16': ModelSpec('configs/_base_/models/faster_rcnn_vgg16.py', 'VGG16 Faster R-CNN (ours)',
                       neg_iou_thr=(0.0, 0.5)),
}

# name -> (sampler type, settings on top of the model's num/pos_fraction/neg_pos_ub/add_gt_as_proposals)
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'random': ('RandomSampler', {}),
    'mmdet_ohem': ('MMDetOHEMSampler', {}),
    'ours_nonms': ('OHEMSampler', dict(nms=None, log_stats=False)),
    'ours': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False)),
    # readonly_dtype=None: the read-only pass exactly in the training precision (float32 matmuls without
    # TF32 in float32 training, bf16 under bf16 autocast: the default's choice there before 2026-11-27's
    # twelfth session); 'ours' has the default, 'tf32' (float32 with TF32 matmuls under bf16 autocast).
    'ours_exact': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                       readonly_dtype=None)),
    'ours_bf16': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                      readonly_dtype='bf16')),
    # batch_images=False: each image mined in its own sample() call (before 2026-11-26's second release
    # the only way); 'ours' mines the batch's images together.
    'ours_per_image': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                           batch_images=False)),
    # cuda_graph=False: the read-only targets, losses and the selection run eagerly on the GPU too ('ours', the
    # default, replays them as one captured CUDA graph there; on the CPU both select on the host).
    'ours_eager': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                       cuda_graph=False)),
    # fast_roi_pool=False: the read-only pass's RoIPool (VGG16) is mmcv's kernel, as before 2026-11-27's
    # thirteenth session; 'ours' takes the bins' maxima with mmdet_ohem.kernels.roi_pool (the same values).
    'ours_mmcv_pool': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                           fast_roi_pool=False)),
    # fast_roi_align=False: the read-only pass's RoIAlign (R50-FPN) is mmcv's kernel on RoIs in the features'
    # dtype, as before 2026-11-27's sixteenth session; 'ours' runs mmdet_ohem.kernels.roi_align (float32
    # arithmetic and RoIs on any features) on a GPU. On the CPU both are 'ours'.
    'ours_mmcv_align': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                            fast_roi_align=False)),
    # fast_roi_align=True named: 'ours' since 2026-11-27's sixteenth session, when it became the default; kept
    # so that the runs of before (where it was off by default) and their commands still read.
    'ours_fast_align': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                            fast_roi_align=True)),
    # one_launch_levels=True named: the read-only pass's FPN extraction aligns all levels' RoIs in one launch of
    # the Triton kernel, with no host read of the level counts; 'ours' since 2026-11-28's twenty-second session,
    # when it became the default; kept so that the runs of before and their commands still read. On the CPU
    # it is 'ours'.
    'ours_one_launch': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                            one_launch_levels=True)),
    # one_launch_levels=False: the FPN levels one at a time (sorted, split, one host read of their counts): 'ours'
    # before 2026-11-28's twenty-second session. On the CPU it is 'ours'.
    'ours_per_level': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                           one_launch_levels=False)),
    # cuda_graph=True named: 'ours' since 2026-11-27, when it became the default; kept so that the runs of
    # before (where 'ours' was the eager selection) and their commands still read.
    'ours_graph': ('OHEMSampler', dict(nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False,
                                       cuda_graph=True)),
}
#: The default of OHEMSampler's cuda_graph before 2026-11-27: saved runs without their samplers'
#: descriptions are from then, and --rerender describes their variants with it.
LEGACY_CUDA_GRAPH_DEFAULT = False
# Variants that also mine the RPN's anchors (issue 14): the R-CNN sampler as named, plus RPNOHEMSampler with
# the RPN's budget (256 anchors/image), loss-NMS 0.7, no ratio. Their cost minus that of the variant without
# RPN mining ('random' / 'ours') is the RPN miner's cost per iteration.
VARIANTS['rpn_ohem'] = VARIANTS['random']
VARIANTS['ours_rpn_ohem'] = VARIANTS['ours']
RPN_MINED = {'rpn_ohem': 'random', 'ours_rpn_ohem': 'ours'}
RPN_MINER = dict(type='RPNOHEMSampler', nms=dict(type='LossNMS', iou_threshold=0.7), log_stats=False)
DEFAULT_VARIANTS = ('random', 'mmdet_ohem', 'ours_nonms', 'ours')
GPU_VARIANTS = ('random', 'mmdet_ohem', 'ours', 'ours_exact', 'ours_bf16', 'ours_per_image',
                'ours_eager')  # issue 10's table
# --precision: autocast dtype of the training forward, and whether the loss is scaled (GradScaler), as
# mmengine's AmpOptimWrapper does for `tools/train.py --amp` (fp16); bf16 needs no scaling.
PRECISIONS: Dict[str, Tuple[Optional[torch.dtype], bool]] = {
    'fp32': (None, False), 'fp16': (torch.float16, True), 'bf16': (torch.bfloat16, False)}
BASE_KEYS = ('num', 'pos_fraction', 'neg_pos_ub', 'add_gt_as_proposals')


def base_sampler_settings(cfg) -> Dict[str, Any]:
    """The budget settings of the model's own R-CNN sampler, shared by every variant.

    Only ``num``, ``pos_fraction``, ``neg_pos_ub`` and ``add_gt_as_proposals`` are kept, so that all
    variants mine the same per-image budget whatever sampler the config itself names.

    Raises:
        KeyError: If the config is not a single-stage-RoI-head two-stage detector or has no ``num``.
    """
    stages = rcnn_train_cfgs(cfg)
    if len(stages) != 1:
        raise KeyError(f'benchmark supports single-stage RoI heads, the config has {len(stages)} stages')
    sampler = dict(stages[0].get('sampler') or {})
    if 'num' not in sampler:
        raise KeyError(f'train_cfg.rcnn.sampler has no num: {sampler}')
    base = {k: sampler[k] for k in BASE_KEYS if k in sampler}
    base.setdefault('pos_fraction', 0.25)
    return base


def describe_variant(variant: str, cuda_graph_default: bool = True) -> str:
    """The samplers a variant uses, for the tables: the R-CNN sampler with its settings, and the RPN miner
    where the variant mines anchors too. ``cuda_graph_default``: OHEMSampler's default at the time of the
    run (:data:`LEGACY_CUDA_GRAPH_DEFAULT` before 2026-11-27)."""
    typ, extra = VARIANTS[variant]
    precision = extra.get('readonly_dtype', 'tf32 (default)') or 'training precision (None)'
    graph = extra.get('cuda_graph', cuda_graph_default)
    ohem_rcnn = typ == 'OHEMSampler' and extra.get('batch_images', True) and extra.get('nms', 1) is not None
    return (typ + (' (no loss-NMS)' if extra.get('nms', 1) is None else '')
            + (f', read-only {precision}' if typ == 'OHEMSampler' else '')
            + (', one image at a time' if extra.get('batch_images', True) is False else '')
            + (", mmcv's RoIPool in the read-only pass" if extra.get('fast_roi_pool', True) is False else '')
            + (", mmcv's RoIAlign in the read-only pass" if extra.get('fast_roi_align', True) is False else '')
            + (', Triton float32 RoIAlign in the read-only pass' if extra.get('fast_roi_align') else '')
            + (', FPN levels aligned in one launch' if extra.get('one_launch_levels') else '')
            + (', FPN levels aligned level by level' if extra.get('one_launch_levels') is False else '')
            + ((', losses and selection as a CUDA graph on a GPU' if graph else ', eager selection') if ohem_rcnn
               else '')
            + (' + RPN miner (RPNOHEMSampler)' if variant in RPN_MINED else ''))


def sampler_cfg(variant: str, base: Dict[str, Any]) -> Dict[str, Any]:
    """The sampler config dict of ``variant`` with the shared budget ``base``.

    Raises:
        KeyError: On an unknown variant name.
    """
    if variant not in VARIANTS:
        raise KeyError(f'unknown sampler variant {variant!r}; known: {sorted(VARIANTS)}')
    typ, extra = VARIANTS[variant]
    return dict(type=typ, **base, **copy.deepcopy(extra))


def load_config(model: str, device: str):
    """The model's config with the benchmark's edits: random init, RandomSampler, RoIAlign on CPU.

    Returns:
        ``(cfg, notes)``: the edited config and a list of human-readable notes on what was changed.

    Raises:
        KeyError: Unknown model name. FileNotFoundError: config not present.
    """
    from mmengine.config import Config

    if model not in MODELS:
        raise KeyError(f'unknown model {model!r}; known: {sorted(MODELS)}')
    spec = MODELS[model]
    if not spec.exists():
        raise FileNotFoundError(f'config for {model!r} not found: {spec.path()}')
    cfg = Config.fromfile(spec.path())
    notes = ['random init (no pretrained download)']
    drop_pretrained(cfg)
    if device == 'cpu':
        before = str(cfg.model)
        use_roi_align(cfg)
        if str(cfg.model) != before:
            notes.append('RoIPool -> RoIAlign (mmcv 2.1 has no CPU RoIPool kernel)')
    if spec.neg_iou_thr is not None:
        rcnn_train_cfgs(cfg)[0]['assigner']['neg_iou_thr'] = tuple(spec.neg_iou_thr)
        notes.append(f'R-CNN assigner neg_iou_thr={tuple(spec.neg_iou_thr)} (bg_lo = {spec.neg_iou_thr[0]}, '
                     'as in the OHEM configs)')
    base = base_sampler_settings(cfg)
    set_rcnn_sampler(cfg, 'RandomSampler', keep=False, **base)
    return cfg, notes


@dataclass
class Prepared:
    """A built model, its optimiser, a fixed batch, and a sampler object per variant."""

    model: nn.Module
    optim: torch.optim.Optimizer
    data: dict
    samplers: Dict[str, Any]
    base: Dict[str, Any]
    notes: List[str] = field(default_factory=list)
    precision: str = 'fp32'
    scaler: Optional[Any] = None  # torch.amp.GradScaler for fp16


@dataclass
class WithRPNMiner:
    """An R-CNN sampler together with the RPN sampler to use with it (used when RPN variants are timed)."""

    rcnn: Any
    rpn: Any

    @property
    def last_stats(self) -> Any:
        """The R-CNN sampler's statistics (what the timing records)."""
        return getattr(self.rcnn, 'last_stats', None)


def swap_sampler(model: nn.Module, sampler: Any) -> None:
    """Puts ``sampler`` into the model's (single-stage) RoI head (and its RPN part into the RPN head)."""
    if isinstance(sampler, WithRPNMiner):
        model.rpn_head.sampler = sampler.rpn
        sampler = sampler.rcnn
    model.roi_head.bbox_sampler = sampler


def prepare(model_name: str, variants: Sequence[str], size: Union[int, Sequence[int]], batch_size: int = 2,
            num_items: Sequence[int] = (6, 4), device: str = 'cpu', seed: int = 0,
            lr: float = 0.02, precision: str = 'fp32') -> Prepared:
    """Builds the model once (fixed seed), a fixed batch of ``size`` (side, or (height, width)) images,
    and a sampler per variant.

    The optimiser is mmdet's default (SGD, momentum 0.9, weight decay 1e-4); ``precision`` is one of
    :data:`PRECISIONS` (fp16 gets a ``GradScaler``).

    Raises:
        ValueError: If ``size`` or ``batch_size`` is not positive, or on an unknown precision.
    """
    from mmdet.registry import TASK_UTILS

    sides = [size] if isinstance(size, int) else list(size)
    if batch_size <= 0 or min(sides) <= 0 or len(sides) not in (1, 2):
        raise ValueError(f'batch_size and size must be positive, got batch_size={batch_size}, size={size}')
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {sorted(PRECISIONS)}, got {precision!r}')
    cfg, notes = load_config(model_name, device)
    if device.startswith('cpu') and PRECISIONS[precision][0] is not None:
        # mmcv 2.1's CPU nms/roi_align take float32 only: run them in float32, as `tools/train.py --amp`
        # on a CPU does (mmdet_ohem.reliability)
        from mmdet_ohem.reliability.amp import run_mmcv_ops_in_float32_under_cpu_autocast
        run_mmcv_ops_in_float32_under_cpu_autocast()
    model = build_detector(cfg, seed, device)
    base = base_sampler_settings(cfg)
    samplers = {v: TASK_UTILS.build(sampler_cfg(v, base), default_args=dict(context=model.roi_head))
                for v in variants}
    if any(v in RPN_MINED for v in variants):
        own = model.rpn_head.sampler  # the config's RandomSampler; the miner is built with the RPN's budget
        miner = TASK_UTILS.build(dict(RPN_MINER, num=own.num), default_args=dict(context=model.rpn_head))
        samplers = {v: WithRPNMiner(s, miner if v in RPN_MINED else own) for v, s in samplers.items()}
    optim = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    data = synthetic_batch(model, batch_size, size, num_items, model.roi_head.bbox_head.num_classes,
                           seed=seed)
    scaler = torch.amp.GradScaler(device.split(':')[0]) if PRECISIONS[precision][1] else None
    return Prepared(model, optim, data, samplers, base, notes, precision, scaler)


def train_step(model: nn.Module, optim: torch.optim.Optimizer, data: dict, precision: str = 'fp32',
               scaler: Optional[Any] = None) -> Dict[str, torch.Tensor]:
    """One training iteration: forward with losses, backward, optimiser step.

    ``fp16``/``bf16``: the forward under autocast, fp16 with loss scaling, as mmengine's
    ``AmpOptimWrapper`` does. Nothing is read back (the log vars are returned as tensors), so a timed
    iteration has no synchronisation of its own beyond the model's.
    """
    dtype, _ = PRECISIONS[precision]
    device_type = next(model.parameters()).device.type
    amp = torch.autocast(device_type=device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with amp:
        losses = model.loss(data['inputs'], data['data_samples'])
    loss, log_vars = model.parse_losses(losses)
    optim.zero_grad()
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
    else:
        loss.backward()
        optim.step()
    return log_vars


def set_threads(threads: Optional[int]) -> int:
    """Sets torch's intra-op threads (default: all cores) and returns the number in use."""
    if threads:
        torch.set_num_threads(int(threads))
    elif os.cpu_count():
        torch.set_num_threads(os.cpu_count())
    return torch.get_num_threads()
