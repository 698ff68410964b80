"""**Opt-in** (changes mmdet's behaviour): mmdet's FPN RoI level mapping in float32 under fp16 ``--amp``.

mmdet 3.3's ``SingleRoIExtractor.forward`` casts the RoIs to the features' dtype (``rois.type_as(feats[0])``)
before ``map_roi_levels``, which computes each RoI's scale as ``sqrt(w * h)``. Under fp16 autocast the area
is then a float16 product, which overflows to inf above 65,504 px^2, so every RoI larger than ~256x256 px
goes to the coarsest level: those up to 448x448 px, which float32 training maps to the level below, get
features of half the resolution, in the training forward of every FPN two-stage model, whatever the
sampler. (mmdet 2.x ran this extractor in float32 through ``force_fp32``.)

Importing this module wraps ``SingleRoIExtractor.map_roi_levels`` (and so its subclasses') so that it maps
from the RoIs cast to float32. Float32 RoIs map as before, bit for bit; half-precision ones (fp16, bf16)
map as float32 arithmetic on their values, so the levels no longer depend on the area's range. Nothing
else changes: the RoI layers still get the RoIs in the features' dtype. Under fp16 ``--amp`` this changes
training (which FPN level these RoIs are pooled from), which is why it is not applied by ``import
mmdet_ohem``. Opt in from a config::

    custom_imports = dict(imports=['mmdet_ohem', 'mmdet_ohem.compat.fp32_roi_levels'], allow_failed_imports=False)

or call :func:`float32_roi_levels` (idempotent). OHEM's read-only pass uses the extractor's own
``map_roi_levels``, so it then maps as the training forward does.
"""
from __future__ import annotations

import functools

import torch

__all__ = ['float32_roi_levels']


def float32_roi_levels() -> None:
    """Wraps mmdet's ``SingleRoIExtractor.map_roi_levels`` to map from float32 RoIs (see the module
    docstring); a second call does nothing."""
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    original = SingleRoIExtractor.map_roi_levels
    if getattr(original, '_mmdet_ohem_fp32', False):
        return

    @functools.wraps(original)
    def map_roi_levels(self, rois: torch.Tensor, num_levels: int) -> torch.Tensor:
        if rois.dtype in (torch.float16, torch.bfloat16):
            rois = rois.float()
        return original(self, rois, num_levels)

    map_roi_levels._mmdet_ohem_fp32 = True
    SingleRoIExtractor.map_roi_levels = map_roi_levels


float32_roi_levels()
