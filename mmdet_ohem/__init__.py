"""mmdet-ohem: Online Hard Example Mining (Shrivastava, Gupta & Girshick, CVPR 2016) for MMDetection 3.x.

Importing this package (configs do it with
``custom_imports=dict(imports=['mmdet_ohem'], allow_failed_imports=False)``):

* registers ``OHEMSampler`` (ours, replacing mmdet's class of that name) and ``LossNMS`` in mmdet's
  ``TASK_UTILS``; mmdet's original sampler stays available as ``MMDetOHEMSampler``;
* registers the VGG16 backbone and Fast R-CNN box head used by the paper's configs;
* allow-lists the types in mmengine checkpoints for ``torch.load(weights_only=True)`` so that
  ``--resume`` and ``load_from`` work on torch >= 2.6.

Pipeline: :mod:`mmdet_ohem.selection` (pure rule) <- :mod:`mmdet_ohem.mining` (read-only pass) <-
:mod:`mmdet_ohem.samplers` (mmdet adapter).
"""
import mmdet.models.task_modules.samplers  # noqa: F401  (mmdet registers its own OHEMSampler first)

from . import datasets, models, reliability  # noqa: F401  (registers the VGG16 model parts, dataset checks)
from .compat import allow_mmengine_checkpoints, patch_history_buffer_pickling
from .samplers import LossNMS, MMDetOHEMSampler, OHEMSampler, UniformSampler

__version__ = '0.1.0'
allow_mmengine_checkpoints()
patch_history_buffer_pickling()

__all__ = ['OHEMSampler', 'MMDetOHEMSampler', 'LossNMS', 'UniformSampler', '__version__']
