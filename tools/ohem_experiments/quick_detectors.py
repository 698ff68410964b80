"""Build mmdet's shipped detectors with a chosen sampler and train them on synthetic batches (CPU-friendly).

Used by ``tools/smoke_train.py``, the benchmark and the tests. Nothing here downloads anything: pretrained
``init_cfg`` entries are dropped, and RoIPool becomes RoIAlign (mmcv has no CPU RoIPool kernel).
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import torch
from mmengine.config import Config

from mmdet_ohem.config_tools import config_path, drop_pretrained, set_rcnn_sampler, use_roi_align

__all__ = ['FASTER_FPN', 'FASTER_C4', 'MASK_FPN', 'CASCADE_FPN', 'DOUBLE_HEAD', 'mmdet_config',
           'build_detector', 'synthetic_batch', 'train_step', 'wrapper_train_step']

FASTER_FPN = 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
FASTER_C4 = 'faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py'
MASK_FPN = 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
CASCADE_FPN = 'cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'
DOUBLE_HEAD = 'double_heads/dh-faster-rcnn_r50_fpn_1x_coco.py'


def mmdet_config(name: str, sampler: Optional[dict] = None, sampler_type: str = 'OHEMSampler',
                 rpn_max_per_img: Optional[int] = None, roi_align: bool = True) -> Config:
    """mmdet's shipped config ``name`` (e.g. ``'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'``) with the
    sampler type/settings changed and the CPU necessities applied.

    Args:
        name: A config file path, a ``pkg::path`` name, or a path under mmdet's ``configs/``.
        sampler: Sampler settings to override (the config's ``num``/``pos_fraction``... are kept).
        sampler_type: Registered sampler type for every R-CNN stage.
        rpn_max_per_img: Optionally fewer RPN training proposals (heavy shared heads on CPU).
        roi_align: Replace ``RoIPool`` layers with ``RoIAlign`` (default; mmcv has no CPU RoIPool). ``False``
            keeps the shipped RoI layers (a GPU run).
    """
    cfg = Config.fromfile(config_path(name))
    drop_pretrained(cfg)
    if roi_align:
        use_roi_align(cfg)
    set_rcnn_sampler(cfg, sampler_type, **(sampler or {}))
    if rpn_max_per_img is not None:
        cfg.model.train_cfg.rpn_proposal.max_per_img = rpn_max_per_img
    return cfg


def build_detector(cfg: Config, seed: int = 0, device: str = 'cpu') -> torch.nn.Module:
    """Builds ``cfg.model`` in mmdet's scope with ``mmdet_ohem`` loaded, initialised, in train mode."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    import mmdet_ohem  # noqa: F401  (what custom_imports does)
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    return model.to(device).train()


def synthetic_batch(model: torch.nn.Module, batch_size: int = 2, size: Union[int, Sequence[int]] = 128,
                    num_items: Sequence[int] = (3, 2), num_classes: int = 5, with_mask: bool = False,
                    seed: int = 0, with_semantic: bool = False, num_proposals: int = 0) -> dict:
    """A fixed random batch (mmdet's ``demo_mm_inputs``), already through the model's data preprocessor.

    ``size``: the image side (square), or ``(height, width)``. ``with_semantic`` adds ``gt_sem_seg`` (HTC,
    SCNet); ``num_proposals`` > 0 adds that many random ``proposals`` per image, for detectors without an
    RPN (Fast R-CNN).
    """
    from mmdet.testing import demo_mm_inputs
    from mmengine.structures import InstanceData
    torch.manual_seed(seed)
    items = [num_items[i % len(num_items)] for i in range(batch_size)]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    packed = demo_mm_inputs(batch_size, image_shapes=[(3, h, w)] * batch_size, num_items=items,
                            num_classes=max(num_classes, 2), with_mask=with_mask, with_semantic=with_semantic)
    if num_classes == 1:  # demo_mm_inputs draws labels from [1, num_classes)
        for d in packed['data_samples']:
            d.gt_instances.labels.zero_()
    if num_proposals:
        g = torch.Generator().manual_seed(seed)
        for d in packed['data_samples']:
            scale = torch.tensor([w, h], dtype=torch.float32)
            xy = torch.rand(num_proposals, 2, generator=g) * scale * 0.8
            wh = torch.rand(num_proposals, 2, generator=g) * scale * 0.5 + 4
            d.proposals = InstanceData(bboxes=torch.cat([xy, torch.minimum(xy + wh, scale)], dim=1))
    device = next(model.parameters()).device
    packed['inputs'] = [x.to(device) for x in packed['inputs']]
    packed['data_samples'] = [d.to(device) for d in packed['data_samples']]
    return model.data_preprocessor(packed, True)


def wrapper_train_step(model: torch.nn.Module, data: dict, wrapper) -> dict:
    """One step through an mmengine optimizer wrapper as mmengine's ``train_step`` runs it (the forward in
    ``optim_context``, ``parse_losses``, ``update_params``): with ``AmpOptimWrapper``, what ``tools/train.py
    --amp`` runs. Returns the log vars as floats."""
    with wrapper.optim_context(model):
        raw = model.loss(data['inputs'], data['data_samples'])
    loss, log_vars = model.parse_losses(raw)
    wrapper.update_params(loss)
    return {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()}


def train_step(model: torch.nn.Module, data: dict, optim: torch.optim.Optimizer) -> dict:
    """One real optimisation step (forward, backward, step); returns the log vars as floats."""
    losses = model.loss(data['inputs'], data['data_samples'])
    loss, log_vars = model.parse_losses(losses)
    optim.zero_grad()
    loss.backward()
    optim.step()
    return {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()}
