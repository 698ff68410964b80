"""mmdet-ohem: Online Hard Example Mining (Shrivastava, Gupta & Girshick, CVPR 2016) for MMDetection 3.x.

Importing this package (configs do it with
``custom_imports=dict(imports=['mmdet_ohem'], allow_failed_imports=False)``):

* takes over exactly one existing name, ``OHEMSampler`` in mmdet's ``TASK_UTILS`` (the build log says
  which OHEM is active); mmdet's original stays available as ``MMDetOHEMSampler``;
* registers new names only: ``LossNMS``, ``UniformSampler``, ``MMDetOHEMSampler``, the RPN's hard-anchor
  miner (``RPNOHEMSampler``, ``OHEMRPNHead``) and the paper's model parts (``VGG16``, ``FRCNBBoxHead``,
  ``VGG16Pretrained``; ``VGGM``, ``VGGMBBoxHead``, ``VGGMPretrained``; ``IterBBoxRegRoIHead`` for iterative
  box regression with weighted voting);
* allow-lists the types in mmengine checkpoints for ``torch.load(weights_only=True)`` so that
  ``--resume`` and ``load_from`` work on torch >= 2.6 (a behaviour-preserving compatibility fix);
* makes ``_base_ = 'mmdet_ohem::ohem/...'`` resolve to the configs shipped in ``mmdet_ohem/.mim/configs``
  (adds one new key to mmengine's package table; :mod:`mmdet_ohem.compat.package_configs`);
* lets mmcv's ``RoIAlign``/``RoIPool`` modules take bfloat16 features (bf16 ``--amp``) by computing
  them in float32; other dtypes take mmcv's code path unchanged (a behaviour-preserving compatibility fix,
  :mod:`mmdet_ohem.compat.mmcv_bf16`).

The project's own reliability extras (checked VOC dataset, CPU ``--amp``, corrupt-checkpoint errors, the
RNG-state hook) are opt-in: ``custom_imports=dict(imports=['mmdet_ohem', 'mmdet_ohem.reliability'])``.

Pipeline: :mod:`mmdet_ohem.selection` (pure rule) <- :mod:`mmdet_ohem.readonly_pass` (read-only pass) <-
:mod:`mmdet_ohem.samplers` (mmdet adapter).
"""
import mmdet.models.task_modules.samplers  # noqa: F401  (mmdet registers its own OHEMSampler first)

from . import models  # noqa: F401  (VGG16/VGGM parts, IterBBoxRegRoIHead, OHEMRPNHead)
from .compat import (allow_mmengine_checkpoints, mmcv_roi_layers_accept_bfloat16, patch_history_buffer_pickling,
                     register_package_configs)
from .samplers import LossNMS, MMDetOHEMSampler, OHEMSampler, RPNOHEMSampler, UniformSampler

__version__ = '0.2.0'
allow_mmengine_checkpoints()
patch_history_buffer_pickling()
register_package_configs()
mmcv_roi_layers_accept_bfloat16()

__all__ = ['OHEMSampler', 'MMDetOHEMSampler', 'LossNMS', 'UniformSampler', 'RPNOHEMSampler', '__version__']
