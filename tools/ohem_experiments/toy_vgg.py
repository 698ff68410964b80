"""Narrows a VGG16 detector config (same architecture, fewer channels) for CPU demos and tests."""
from __future__ import annotations

from typing import MutableMapping

from mmdet_ohem.config_tools import drop_pretrained
from mmdet_ohem.models.vgg import _WIDTH_MULT

__all__ = ['shrink_vgg16']


def shrink_vgg16(cfg: MutableMapping, base_channels: int = 8, fc_out_channels: int = 64) -> MutableMapping:
    """Sets the VGG16 width in ``cfg`` and every channel count that depends on it, in place.

    Touches ``backbone.base_channels``, the RPN's ``in_channels``/``feat_channels`` (when there is an
    RPN), the RoI extractor's ``out_channels`` and the box head's ``in_channels``/``fc_out_channels``.
    ImageNet ``init_cfg`` entries no longer fit a narrowed model, so they are removed.

    Args:
        cfg: Full config (with ``model``) or a model dict whose backbone is ``VGG16``.
        base_channels: conv1 width (64 in the real network).
        fc_out_channels: fc6/fc7 width (4096 in the real network).

    Raises:
        ValueError: If the backbone is not ``VGG16`` or a width is not a positive int.
    """
    model = cfg['model'] if 'model' in cfg else cfg
    if model.get('backbone', {}).get('type') != 'VGG16':
        raise ValueError(f"shrink_vgg16 needs a VGG16 backbone, got {model.get('backbone', {}).get('type')!r}")
    for name, v in (('base_channels', base_channels), ('fc_out_channels', fc_out_channels)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f'shrink_vgg16: {name} must be a positive int, got {v!r}')
    out = base_channels * _WIDTH_MULT[-1]
    model['backbone']['base_channels'] = base_channels
    model['backbone']['init_cfg'] = None
    if model.get('rpn_head'):
        model['rpn_head']['in_channels'] = out
        model['rpn_head']['feat_channels'] = out
    roi = model['roi_head']
    roi['bbox_roi_extractor']['out_channels'] = out
    head = roi['bbox_head']
    head['in_channels'] = out
    head['fc_out_channels'] = fc_out_channels
    drop_pretrained(model)  # the head's VGG16Pretrained fc6/fc7 entry (its Normal init for cls/box stays)
    return cfg
