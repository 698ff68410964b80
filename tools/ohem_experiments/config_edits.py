"""Named config edits for experiments: the paper's heuristics as knobs on any two-stage config.

Each edit changes a full mmdet ``Config`` in place and returns it. Sampler edits go through
:func:`mmdet_ohem.config_tools.set_rcnn_sampler`, so they work for every R-CNN stage (cascade included).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, MutableMapping, Optional

from mmdet_ohem.config_tools import rcnn_train_cfgs, set_rcnn_sampler

__all__ = ['EDITS', 'AXIS_ORDER', 'OHEM_ONLY', 'is_ohem', 'set_batch_size', 'set_rois_per_batch',
           'set_bg_lo', 'set_ohem', 'set_ratio', 'set_loss_nms', 'set_ranking_loss', 'set_seed',
           'set_iters', 'set_data_root', 'set_lr_mult', 'set_multiscale', 'set_iter_bbox', 'multiscale_scales',
           'FRCN_RATIO']

OHEM_KEYS = ('ranking_loss', 'nms', 'keep_ratio', 'nonfinite', 'readonly_dtype', 'log_stats')
BASIC_KEYS = ('num', 'pos_fraction', 'neg_pos_ub', 'add_gt_as_proposals')
#: Fast R-CNN's fg:bg quota (1:3), used where a config without one switches to ``RandomSampler``.
FRCN_RATIO = dict(pos_fraction=0.25, neg_pos_ub=-1)


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
        # The OHEM configs (_base_/ohem_rcnn.py) have no ratio, hence no pos_fraction: 'off' means Fast
        # R-CNN's sampler, so the missing quota is Fast R-CNN's 1:3 (RandomSampler needs it).
        set_rcnn_sampler(cfg, 'RandomSampler', keep=False, **dict(FRCN_RATIO, **basics))
    return cfg


def set_ratio(cfg: MutableMapping, on: bool) -> MutableMapping:
    """``ratio``: the 1:3 fg:bg quota (``pos_fraction``). OHEM: ``keep_ratio``; else Random vs Uniform.
    A sampler without a ``pos_fraction`` gets Fast R-CNN's 0.25 when the ratio is switched on."""
    if not isinstance(on, bool):
        raise ValueError(f'ratio must be True or False, got {on!r}')
    missing = {k: v for k, v in FRCN_RATIO.items() if k not in _sampler(cfg)} if on else {}
    if is_ohem(cfg):
        return set_rcnn_sampler(cfg, 'OHEMSampler', keep=True, keep_ratio=on, **missing)
    return set_rcnn_sampler(cfg, 'RandomSampler' if on else 'UniformSampler', keep=True, **missing)


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


def set_lr_mult(cfg: MutableMapping, mult: float) -> MutableMapping:
    """``lr_mult``: multiplies the optimiser's base lr (the paper trains "All RoIs" at 3-4x FRCN's lr)."""
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
        raise ValueError(f'lr_mult must be a positive number, got {mult!r}')
    optimizer = cfg['optim_wrapper']['optimizer']
    optimizer['lr'] = float(optimizer['lr']) * float(mult)
    return cfg


#: The paper's multi-scale training/testing scales (shorter side; Fast R-CNN / SPPnet) for a 600 px base.
PAPER_SCALES = (480, 576, 688, 864, 1200)
PAPER_BASE_SHORT, PAPER_MAX_SIZE = 600, 2000


def multiscale_scales(base_short: int) -> tuple:
    """The paper's scales relative to a config's single test scale: ``(scales, max_size)``.

    ``multiscale_scales(600) == ((480, 576, 688, 864, 1200), 2000)``; a toy config at 160 px gets the same
    ratios (128 ... 320, longer side <= 533).
    """
    if isinstance(base_short, bool) or not isinstance(base_short, int) or base_short <= 0:
        raise ValueError(f'base shorter side must be a positive int, got {base_short!r}')
    scales = tuple(int(round(s * base_short / PAPER_BASE_SHORT)) for s in PAPER_SCALES)
    return scales, int(round(PAPER_MAX_SIZE * base_short / PAPER_BASE_SHORT))


def _innermost_dataset(loader: MutableMapping) -> MutableMapping:
    ds = loader['dataset']
    while isinstance(ds.get('dataset'), MutableMapping):
        ds = ds['dataset']
    return ds


def _resize_index(pipeline: list, where: str) -> int:
    idx = [i for i, t in enumerate(pipeline) if t.get('type') in ('Resize', 'RandomChoiceResize')]
    if len(idx) != 1:
        raise ValueError(f'multiscale needs exactly one Resize in the {where} pipeline, found {len(idx)}: '
                         f'{[t.get("type") for t in pipeline]}')
    return idx[0]


def set_multiscale(cfg: MutableMapping, on: bool) -> MutableMapping:
    """``multiscale`` ("M"): train with the shorter side drawn per image from the paper's five scales
    (:func:`multiscale_scales` of the config's test scale; ``RandomChoiceResize``) and test at the same
    scales with mmdet's ``TestTimeAug`` + ``DetTTAModel`` (merge by the config's test NMS); sets
    ``test_with_tta = True`` so that :func:`~ohem_experiments.runs.train_and_evaluate` tests that way.
    ``off`` leaves a single-scale config unchanged (and only clears ``test_with_tta``)."""
    if not isinstance(on, bool):
        raise ValueError(f'multiscale must be True or False, got {on!r}')
    if not on:
        cfg['test_with_tta'] = False
        return cfg
    test_ds = _innermost_dataset(cfg['test_dataloader'])
    test_pipeline = list(test_ds['pipeline'])
    t_idx = _resize_index(test_pipeline, 'test')
    scale = test_pipeline[t_idx].get('scale')
    if not isinstance(scale, (list, tuple)) or len(scale) != 2:
        raise ValueError(f'multiscale needs a (w, h) Resize scale in the test pipeline, got {scale!r}')
    scales, max_size = multiscale_scales(int(min(scale)))
    train_ds = _innermost_dataset(cfg['train_dataloader'])
    train_pipeline = [dict(t) for t in train_ds['pipeline']]
    train_pipeline[_resize_index(train_pipeline, 'train')] = dict(
        type='RandomChoiceResize', scales=[(max_size, s) for s in scales], keep_ratio=True)
    train_ds['pipeline'] = train_pipeline
    groups: list = []
    for i, t in enumerate(test_pipeline[1:], 1):
        if i == t_idx:
            groups.append([dict(type='Resize', scale=(max_size, s), keep_ratio=True) for s in scales])
            groups.append([dict(type='RandomFlip', prob=0.)])
        elif t.get('type') == 'PackDetInputs':
            keys = tuple(t.get('meta_keys', ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')))
            groups.append([dict(t, meta_keys=keys + tuple(k for k in ('flip', 'flip_direction') if k not in keys))])
        else:
            groups.append([dict(t)])
    cfg['tta_pipeline'] = [dict(test_pipeline[0]), dict(type='TestTimeAug', transforms=groups)]
    rcnn_test = cfg['model']['test_cfg']['rcnn']
    cfg['tta_model'] = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(rcnn_test['nms']),
                                                             max_per_img=rcnn_test.get('max_per_img', 100)))
    cfg['test_with_tta'] = True
    return cfg


def set_iter_bbox(cfg: MutableMapping, on: bool) -> MutableMapping:
    """``iter_bbox`` ("B"): test-time iterative box regression with weighted voting
    (``IterBBoxRegRoIHead``: 2 passes pooled, NMS from ``test_cfg.rcnn``, voting IoU 0.5); training is
    unchanged. ``off`` restores ``StandardRoIHead``."""
    if not isinstance(on, bool):
        raise ValueError(f'iter_bbox must be True or False, got {on!r}')
    roi = cfg['model']['roi_head']
    if roi.get('type') not in ('StandardRoIHead', 'IterBBoxRegRoIHead'):
        raise ValueError(f"iter_bbox needs a StandardRoIHead, got roi_head type {roi.get('type')!r}")
    if on:
        roi.update(type='IterBBoxRegRoIHead', num_iters=roi.get('num_iters', 2), vote_iou=roi.get('vote_iou', 0.5))
    elif roi.get('type') == 'IterBBoxRegRoIHead':
        for k in ('num_iters', 'vote_iou', 'max_rois_per_pass'):
            roi.pop(k, None)
        roi['type'] = 'StandardRoIHead'
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
    'lr_mult': set_lr_mult,
    'multiscale': set_multiscale,
    'iter_bbox': set_iter_bbox,
}
# Edits are applied in this order whatever the grid's order (B needs N; ratio/nms/ranking need ohem).
AXIS_ORDER = ('iters', 'seed', 'N', 'B', 'bg_lo', 'ohem', 'ratio', 'nms', 'ranking_loss', 'lr_mult', 'multiscale',
              'iter_bbox')
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
