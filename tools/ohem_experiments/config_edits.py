"""Named config edits for experiments: the paper's heuristics as knobs on any two-stage config.

Each edit changes a full mmdet ``Config`` in place and returns it. Sampler edits go through
:func:`mmdet_ohem.config_tools.set_rcnn_sampler`, so they work for every R-CNN stage (cascade included).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, MutableMapping, Optional

from mmdet_ohem.config_tools import rcnn_train_cfgs, set_rcnn_sampler

__all__ = ['EDITS', 'AXIS_ORDER', 'OHEM_ONLY', 'is_ohem', 'set_batch_size', 'set_rois_per_batch',
           'set_bg_lo', 'set_ohem', 'set_ratio', 'set_loss_nms', 'set_ranking_loss', 'set_seed',
           'set_iters', 'set_data_root']

OHEM_KEYS = ('ranking_loss', 'nms', 'keep_ratio', 'nonfinite', 'readonly_dtype', 'log_stats')
BASIC_KEYS = ('num', 'pos_fraction', 'neg_pos_ub', 'add_gt_as_proposals')


def _sampler(cfg: MutableMapping) -> dict:
    return dict(rcnn_train_cfgs(cfg)[0].get('sampler') or {})


def is_ohem(cfg: MutableMapping) -> bool:
    """Whether the (first) R-CNN stage samples with ``OHEMSampler``."""
    return _sampler(cfg).get('type') == 'OHEMSampler'


def set_batch_size(cfg: MutableMapping, n: int) -> MutableMapping:
    """``N``: images per training batch."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f'N (images per batch) must be a positive int, got {n!r}')
    cfg['train_dataloader']['batch_size'] = n
    return cfg


def set_rois_per_batch(cfg: MutableMapping, b: int) -> MutableMapping:
    """``B``: RoIs per training batch, i.e. sampler ``num = B / N`` per image (apply ``N`` first)."""
    n = cfg['train_dataloader']['batch_size']
    if isinstance(b, bool) or not isinstance(b, int) or b <= 0 or b % n:
        raise ValueError(f'B (RoIs per batch) must be a positive multiple of N={n}, got {b!r}')
    for stage in rcnn_train_cfgs(cfg):
        stage['sampler'] = dict(stage['sampler'], num=b // n)
    return cfg


def set_bg_lo(cfg: MutableMapping, bg_lo: float) -> MutableMapping:
    """``bg_lo``: background RoIs need max IoU in ``[bg_lo, fg threshold)`` (0 = every RoI may be bg)."""
    if isinstance(bg_lo, bool) or not isinstance(bg_lo, (int, float)) or not 0.0 <= bg_lo < 1.0:
        raise ValueError(f'bg_lo must be a number in [0, 1), got {bg_lo!r}')
    for stage in rcnn_train_cfgs(cfg):
        assigner = stage['assigner']
        neg = assigner.get('neg_iou_thr')
        hi = neg[1] if isinstance(neg, (list, tuple)) else assigner.get('pos_iou_thr', 0.5)
        if bg_lo >= hi:
            raise ValueError(f'bg_lo={bg_lo!r} must be below the background upper bound {hi!r}')
        stage['assigner'] = dict(assigner, neg_iou_thr=(float(bg_lo), float(hi)))
    return cfg


def set_ohem(cfg: MutableMapping, on: bool) -> MutableMapping:
    """``ohem``: mine with the paper's ``OHEMSampler`` (on: no fg:bg ratio, loss-NMS 0.7), or sample
    randomly with Fast R-CNN's ``RandomSampler`` (off: the 1:3 ratio). Add a ``ratio`` axis to change
    the ratio of either. Switching keeps ``num``/``pos_fraction``/``neg_pos_ub``/``add_gt_as_proposals``;
    a sampler that already is of the requested kind is left as it is.
    """
    if not isinstance(on, bool):
        raise ValueError(f'ohem must be True or False, got {on!r}')
    old = _sampler(cfg)
    basics = {k: old[k] for k in BASIC_KEYS if k in old}
    if on and old.get('type') != 'OHEMSampler':
        set_rcnn_sampler(cfg, 'OHEMSampler', keep=False, keep_ratio=False, **basics)
    elif not on and old.get('type') == 'OHEMSampler':
        set_rcnn_sampler(cfg, 'RandomSampler', keep=False, **basics)
    return cfg


def set_ratio(cfg: MutableMapping, on: bool) -> MutableMapping:
    """``ratio``: the 1:3 fg:bg quota (``pos_fraction``). OHEM: ``keep_ratio``; else Random vs Uniform."""
    if not isinstance(on, bool):
        raise ValueError(f'ratio must be True or False, got {on!r}')
    if is_ohem(cfg):
        return set_rcnn_sampler(cfg, 'OHEMSampler', keep=True, keep_ratio=on)
    return set_rcnn_sampler(cfg, 'RandomSampler' if on else 'UniformSampler', keep=True)


def _require_ohem(cfg: MutableMapping, axis: str) -> None:
    if not is_ohem(cfg):
        raise ValueError(f'{axis} applies to OHEMSampler only; the sampler is {_sampler(cfg).get("type")!r}')


def set_loss_nms(cfg: MutableMapping, iou: Optional[float]) -> MutableMapping:
    """``nms``: loss-NMS IoU threshold of the OHEM sampler (``None`` = no loss-NMS)."""
    _require_ohem(cfg, 'nms')
    if iou is not None and (isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 < iou <= 1):
        raise ValueError(f'nms must be None or an IoU threshold in (0, 1], got {iou!r}')
    nms = None if iou is None else dict(type='LossNMS', iou_threshold=float(iou))
    return set_rcnn_sampler(cfg, 'OHEMSampler', keep=True, nms=nms)


def set_ranking_loss(cfg: MutableMapping, ranking: str) -> MutableMapping:
    """``ranking_loss``: what OHEM ranks RoIs by: ``'cls+loc'``, ``'cls'`` or ``'loc'``."""
    _require_ohem(cfg, 'ranking_loss')
    if ranking not in ('cls+loc', 'cls', 'loc'):
        raise ValueError(f"ranking_loss must be 'cls+loc', 'cls' or 'loc', got {ranking!r}")
    return set_rcnn_sampler(cfg, 'OHEMSampler', keep=True, ranking_loss=ranking)


def set_seed(cfg: MutableMapping, seed: int) -> MutableMapping:
    """``seed``: mmengine's ``randomness.seed`` (model init, data order)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be a non-negative int, got {seed!r}')
    cfg['randomness'] = dict(cfg.get('randomness') or {}, seed=seed)
    return cfg


def set_iters(cfg: MutableMapping, iters: int) -> MutableMapping:
    """``iters``: training length of an iteration-based schedule; LR milestones, the warm-up and the
    checkpoint/validation intervals are rescaled to the new length, and the logging interval is capped
    at ``iters // 20`` (so short runs still log a curve)."""
    if isinstance(iters, bool) or not isinstance(iters, int) or iters <= 0:
        raise ValueError(f'iters must be a positive int, got {iters!r}')
    train_cfg = cfg['train_cfg']
    if train_cfg.get('type') != 'IterBasedTrainLoop':
        raise ValueError(f"iters needs an IterBasedTrainLoop schedule, got {train_cfg.get('type')!r}")
    old = int(train_cfg['max_iters'])
    scale = iters / old
    train_cfg['max_iters'] = iters
    train_cfg['val_interval'] = max(1, min(iters, int(round(train_cfg.get('val_interval', old) * scale))))
    scheds = cfg.get('param_scheduler') or []
    for s in scheds if isinstance(scheds, (list, tuple)) else [scheds]:
        if 'milestones' in s:
            s['milestones'] = [max(1, int(round(m * scale))) for m in s['milestones']]
        if 'end' in s and s.get('by_epoch') is False:
            s['end'] = max(1, min(iters, int(round(s['end'] * scale))))
    hooks = cfg.get('default_hooks') or {}
    if hooks.get('checkpoint') is not None:
        ckpt = hooks['checkpoint']
        ckpt['interval'] = max(1, min(iters, int(round(ckpt.get('interval', old) * scale))))
    if hooks.get('logger') is not None:  # keep >= 20 logged points for loss curves and final loss
        hooks['logger']['interval'] = min(hooks['logger'].get('interval', 50), max(1, iters // 20))
    return cfg


EDITS: Dict[str, Callable[[MutableMapping, Any], MutableMapping]] = {
    'N': set_batch_size,
    'B': set_rois_per_batch,
    'bg_lo': set_bg_lo,
    'ohem': set_ohem,
    'ratio': set_ratio,
    'nms': set_loss_nms,
    'ranking_loss': set_ranking_loss,
    'seed': set_seed,
    'iters': set_iters,
}
# Edits are applied in this order whatever the grid's order (B needs N; ratio/nms/ranking need ohem).
AXIS_ORDER = ('iters', 'seed', 'N', 'B', 'bg_lo', 'ohem', 'ratio', 'nms', 'ranking_loss')
OHEM_ONLY = ('nms', 'ranking_loss')


def set_data_root(cfg: MutableMapping, data_root: str) -> MutableMapping:
    """Points every dataloader's dataset (and wrapped datasets) at ``data_root``."""
    root = str(data_root).rstrip('/') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = (cfg.get(key) or {}).get('dataset')
        while isinstance(ds, MutableMapping):
            if 'data_root' in ds or 'ann_file' in ds:
                ds['data_root'] = root
            ds = ds.get('dataset')
    return cfg
