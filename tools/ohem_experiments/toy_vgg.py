"""Narrows a VGG16 or VGGM detector config (same architecture, fewer channels) for CPU demos and tests."""
from __future__ import annotations

from typing import MutableMapping, Sequence

from mmdet_ohem.config_tools import drop_pretrained
from mmdet_ohem.models.vgg import _WIDTH_MULT

__all__ = ['shrink_vgg16', 'shrink_vggm']


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


def shrink_vggm(cfg: MutableMapping, channels: Sequence[int] = (8, 16, 32, 32, 32), fc6_channels: int = 64,
                fc7_channels: int = 32) -> MutableMapping:
    """Narrows a ``VGGM`` (VGG_CNN_M_1024) detector config in place, like :func:`shrink_vgg16`: backbone
    widths, the RPN's and RoI extractor's channels, the head's ``in_channels``/fc6/fc7; ImageNet
    ``init_cfg`` entries are removed (they no longer fit).

    Raises:
        ValueError: If the backbone is not ``VGGM`` (bad widths fail when the model is built).
    """
    model = cfg['model'] if 'model' in cfg else cfg
    if model.get('backbone', {}).get('type') != 'VGGM':
        raise ValueError(f"shrink_vggm needs a VGGM backbone, got {model.get('backbone', {}).get('type')!r}")
    out = int(channels[-1])
    model['backbone']['channels'] = tuple(channels)
    if model.get('rpn_head'):
        model['rpn_head']['in_channels'] = out
        model['rpn_head']['feat_channels'] = out
    roi = model['roi_head']
    roi['bbox_roi_extractor']['out_channels'] = out
    roi['bbox_head'].update(in_channels=out, fc6_channels=fc6_channels, fc_out_channels=fc7_channels)
    drop_pretrained(model)
    return cfg
