"""Lets mmengine 0.10.7 load its own checkpoints on torch >= 2.6 (``weights_only=True`` by default).

mmengine's ``Runner.save_checkpoint`` stores the ``MessageHub`` state, whose ``HistoryBuffer`` objects
hold numpy arrays, and schedulers' ``Counter`` milestones. torch >= 2.6 refuses to unpickle those
unless they are allow-listed. Two narrow fixes, applied when ``mmdet_ohem`` is imported:

1. :func:`allow_mmengine_checkpoints` allow-lists exactly those data types with
   ``torch.serialization.add_safe_globals``; ``weights_only`` stays on for every load.
2. :func:`patch_history_buffer_pickling`: ``HistoryBuffer.__getstate__`` also stores its statistics
   methods (``HistoryBuffer.min`` ...). At pickle protocol 2 those are written as
   ``builtins.getattr(HistoryBuffer, 'min')``, and allow-listing ``getattr`` would let a checkpoint reach
   any attribute of any allowed object (and from there ``eval``). Instead the built-in methods are
   pickled by *name* and re-attached on load, so new checkpoints contain no ``getattr`` at all.

Checkpoints written by plain mmengine on torch >= 2.6 (without this package loaded) still contain
``getattr`` and are refused; re-save them once with ``tools/upgrade_checkpoint.py`` after checking you
trust the file.
"""
from __future__ import annotations

import collections
from typing import Any, List

import torch

__all__ = ['mmengine_checkpoint_globals', 'allow_mmengine_checkpoints', 'patch_history_buffer_pickling']

_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


def _numpy_globals() -> List[Any]:
    import numpy as np
    try:  # numpy >= 2 moved the pickle helpers to numpy._core
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    found: List[Any] = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:  # numpy >= 1.25 pickles dtypes by their class, e.g. numpy.dtypes.Float64DType
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return found


def mmengine_checkpoint_globals() -> List[Any]:
    """The non-tensor types an mmengine Runner checkpoint contains."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, collections.Counter, collections.defaultdict] + _numpy_globals()


def allow_mmengine_checkpoints() -> bool:
    """Allow-lists :func:`mmengine_checkpoint_globals` for ``torch.load(weights_only=True)``.

    Returns:
        True if the allow-list was installed, False on a torch without ``add_safe_globals`` (< 2.4),
        where ``torch.load`` does not default to ``weights_only`` anyway.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # pragma: no cover - old torch
        return False
    add(mmengine_checkpoint_globals())
    return True


def patch_history_buffer_pickling() -> None:
    """Makes ``HistoryBuffer`` pickle its built-in statistics methods by name (idempotent).

    Custom methods registered with ``HistoryBuffer.register_statistics`` are still pickled as before
    (module-level functions pickle by qualified name; allow-list them yourself if you use them).
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if getattr(HistoryBuffer, '_mmdet_ohem_pickle_patch', False):
        return
    original_setstate = HistoryBuffer.__setstate__

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
        custom = {k: v for k, v in self._statistics_methods.items()
                  if not (k in _BUILTIN_STATISTICS and v is getattr(HistoryBuffer, k))}
        if custom:
            state['statistics_methods'] = custom
        return state

    def __setstate__(self, state: dict) -> None:
        for name in _BUILTIN_STATISTICS:
            HistoryBuffer._statistics_methods.setdefault(name, getattr(HistoryBuffer, name))
        original_setstate(self, state)

    HistoryBuffer.__getstate__ = __getstate__
    HistoryBuffer.__setstate__ = __setstate__
    HistoryBuffer._mmdet_ohem_pickle_patch = True
