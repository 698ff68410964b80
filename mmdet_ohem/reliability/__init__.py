"""Reliability for long trainings: clear errors for damaged checkpoints, exact resume.

Importing :mod:`mmdet_ohem` imports this package, which

* makes mmengine's loader for local checkpoint paths raise
  :class:`~mmdet_ohem.reliability.checkpoint.CorruptCheckpointError` (naming the file) for a truncated or
  corrupt checkpoint instead of a bare zip/pickle error (``weights_only`` loading is unchanged);
* registers :class:`~mmdet_ohem.reliability.rng_state.RNGStateHook`
  (``custom_hooks=[dict(type='RNGStateHook')]``), which stores every rank's RNG state in checkpoints so
  that a killed-and-resumed run continues with the same random numbers as an uninterrupted one;
* provides :func:`~mmdet_ohem.reliability.distributed.prepare_cpu_distributed` (gloo distributed training
  on CPU-only machines, called by ``tools/train.py``) and
  :class:`~mmdet_ohem.reliability.rank_check.WeightsDigestHook` (checks that all ranks hold the same
  weights);
* makes ``--amp`` (mmengine's ``AmpOptimWrapper``) run on CPU-only machines with bfloat16 autocast
  (:mod:`mmdet_ohem.reliability.amp`); with a GPU it is mmengine's class unchanged.

Dataset errors that name the bad file live in :mod:`mmdet_ohem.datasets.checked_voc`.
"""
from .amp import AmpOptimWrapper
from .checkpoint import (CorruptCheckpointError, checkpoint_damage, load_from_local_checked,
                         register_checked_local_loader)
from .distributed import prepare_cpu_distributed
from .rank_check import WeightsDigestHook, weights_digest
from .rng_state import RNGStateHook, get_rng_state, set_rng_state

register_checked_local_loader()

__all__ = ['CorruptCheckpointError', 'checkpoint_damage', 'load_from_local_checked',
           'register_checked_local_loader', 'RNGStateHook', 'get_rng_state', 'set_rng_state',
           'prepare_cpu_distributed', 'WeightsDigestHook', 'weights_digest', 'AmpOptimWrapper']
