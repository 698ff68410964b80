"""Reliability extras for long trainings, opt-in: ``import mmdet_ohem.reliability``.

Importing :mod:`mmdet_ohem` does **not** import this module. A config opts in with
``custom_imports=dict(imports=['mmdet_ohem', 'mmdet_ohem.reliability'])`` (this project's configs and
tools do). It then

* makes mmengine's loader for local checkpoint paths raise
  :class:`~mmdet_ohem.reliability.checkpoint.CorruptCheckpointError` (naming the file) for a truncated or
  corrupt checkpoint instead of a bare zip/pickle error (``weights_only`` loading is unchanged);
* provides :func:`~mmdet_ohem.reliability.checkpoint.auto_resume_fallback` (``tools/train.py --resume``
  without a file): the newest intact checkpoint where ``last_checkpoint`` was left empty or stale by a
  run killed while saving;
* registers :class:`~mmdet_ohem.reliability.rng_state.RNGStateHook`
  (``custom_hooks=[dict(type='RNGStateHook')]``), which stores every rank's RNG state in checkpoints so
  that a killed-and-resumed run continues with the same random numbers as an uninterrupted one;
* provides :func:`~mmdet_ohem.reliability.distributed.prepare_cpu_distributed` (gloo distributed training
  on CPU-only machines, called by ``tools/train.py``),
  :func:`~mmdet_ohem.reliability.distributed.shutdown_distributed` (destroys the process group before the
  interpreter exits, so that a gloo run cannot abort at exit after training finished) and
  :class:`~mmdet_ohem.reliability.rank_check.WeightsDigestHook` (checks that all ranks hold the same
  weights);
* makes ``--amp`` (mmengine's ``AmpOptimWrapper``) run on CPU-only machines with bfloat16 autocast
  (:mod:`mmdet_ohem.reliability.amp`); with a GPU it is mmengine's class unchanged.

* registers ``CheckedVOCDataset`` (:mod:`mmdet_ohem.reliability.checked_voc`), a VOC reader whose errors
  name the bad file, under its own name (mmdet's ``VOCDataset`` is untouched).
"""
from .amp import AmpOptimWrapper
from .checked_voc import AnnotationError, CheckedVOCDataset, MissingImageError
from .checkpoint import (CorruptCheckpointError, auto_resume_fallback, checkpoint_damage,
                         load_from_local_checked, register_checked_local_loader)
from .distributed import gloo_threads, prepare_cpu_distributed, shutdown_distributed
from .rank_check import WeightsDigestHook, weights_digest
from .rng_state import RNGStateHook, get_rng_state, set_rng_state

register_checked_local_loader()

__all__ = ['CorruptCheckpointError', 'checkpoint_damage', 'load_from_local_checked',
           'register_checked_local_loader', 'auto_resume_fallback', 'RNGStateHook', 'get_rng_state',
           'set_rng_state', 'prepare_cpu_distributed', 'shutdown_distributed', 'gloo_threads', 'WeightsDigestHook',
           'weights_digest', 'AmpOptimWrapper', 'AnnotationError', 'CheckedVOCDataset', 'MissingImageError']
