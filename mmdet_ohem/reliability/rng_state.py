"""Saves and restores the random number generators' state with each checkpoint.

mmengine checkpoints hold the model, optimizer, schedulers, message hub and the seed, but not the RNG
state. A resumed run therefore re-seeds and draws different random numbers from then on (data
augmentation, mmdet's ``RandomSampler`` in the RPN, dropout), so it diverges from the uninterrupted run.
:class:`RNGStateHook` stores the Python, NumPy and torch (CPU, and CUDA when present) generator states of
every rank in the checkpoint and puts them back on resume at the point where the uninterrupted run
would continue:

* epoch-based loops: right before training starts (resume happens at an epoch boundary);
* iteration-based loops: right after mmengine has fast-forwarded the dataloader past the iterations
  already trained (the fast-forward itself runs the data pipeline and draws random numbers).

Add it with ``custom_hooks = [dict(type='RNGStateHook')]``. Resuming is exact when the data pipeline
runs in the main process (``num_workers=0``). With worker processes the workers' augmentation streams
are seeded by torch's DataLoader when its iterator is created, which a resumed run does before this hook
can act, so augmentation in the resumed epoch may differ from the uninterrupted run.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log

__all__ = ['RNGStateHook', 'get_rng_state', 'set_rng_state']

CHECKPOINT_KEY = 'rng_state'


def get_rng_state() -> Dict[str, Any]:
    """This process's generator states, as plain types ``torch.load(weights_only=True)`` accepts."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        'python': random.getstate(),
        'numpy': (np_name, [int(k) for k in np_keys], int(np_pos), int(np_has_gauss), float(np_gauss)),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restores states made by :func:`get_rng_state`."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, gauss_next = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss_next))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


class _RestoreAfter:
    """Iterator proxy: forwards ``skip`` ``next()`` calls, then restores the RNG state and unhooks."""

    def __init__(self, loop: Any, skip: int, state: Dict[str, Any]) -> None:
        self.loop, self.inner, self.left, self.state = loop, loop.dataloader_iterator, skip, state

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.left -= 1
        if self.left <= 0:
            self.loop.dataloader_iterator = self.inner
            set_rng_state(self.state)
        return batch


def _checkpoint_hooks(runner: Any) -> List[Any]:
    from mmengine.hooks import CheckpointHook
    return [h for h in runner.hooks if isinstance(h, CheckpointHook)]


def _saves_after_iter(runner: Any) -> bool:
    """Whether a ``CheckpointHook`` will save at the end of this iteration (its own test)."""
    return any(not h.by_epoch and (h.every_n_train_iters(runner, h.interval, h.save_begin)
                                   or (h.save_last and h.is_last_train_iter(runner)))
               for h in _checkpoint_hooks(runner))


def _saves_after_epoch(runner: Any) -> bool:
    """Whether a ``CheckpointHook`` will save at the end of this epoch (its own test)."""
    return any(h.by_epoch and (h.every_n_epochs(runner, h.interval, h.save_begin)
                               or (h.save_last and h.is_last_train_epoch(runner)))
               for h in _checkpoint_hooks(runner))


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Puts every rank's RNG state in the checkpoint and restores it on ``--resume``.

    mmengine saves checkpoints on rank 0 only, so in distributed runs the states are gathered from all
    ranks (one small collective) at the end of each iteration/epoch after which a ``CheckpointHook``
    will save; this hook runs before ``CheckpointHook`` for that reason. Only resumes
    (``runner._resume``) restore the state; ``load_from`` (fine-tuning) does not.
    """

    priority = 'LOW'  # after_train_iter/epoch before CheckpointHook (VERY_LOW)

    def __init__(self) -> None:
        self._pending: Optional[Dict[str, Any]] = None
        self._gathered: Optional[List[Dict[str, Any]]] = None

    def _gather(self) -> None:
        _, world_size = get_dist_info()
        self._gathered = all_gather_object(get_rng_state()) if world_size > 1 else None

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        """Gathers all ranks' states when a checkpoint follows (distributed runs only)."""
        if _saves_after_iter(runner):
            self._gather()

    def after_train_epoch(self, runner: Any) -> None:
        """Gathers all ranks' states when a checkpoint follows (distributed runs only)."""
        if _saves_after_epoch(runner):
            self._gather()

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Stores the states (called on rank 0 only)."""
        _, world_size = get_dist_info()
        if world_size > 1 and self._gathered is not None:
            checkpoint[CHECKPOINT_KEY] = self._gathered
        else:  # single process, or a save this hook did not foresee: rank 0's state only
            checkpoint[CHECKPOINT_KEY] = [get_rng_state()]
        self._gathered = None

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """Picks this rank's saved state; applied later, in ``before_train``."""
        if not getattr(runner, '_resume', False):
            return
        states = checkpoint.get(CHECKPOINT_KEY)
        if not states:
            print_log('[mmdet_ohem] RNGStateHook: checkpoint has no RNG state (saved without the hook); '
                      'the resumed run re-seeds and will not match an uninterrupted run exactly',
                      logger='current', level=logging.WARNING)
            return
        rank, world_size = get_dist_info()
        if len(states) != world_size:
            print_log(f'[mmdet_ohem] RNGStateHook: checkpoint holds RNG states of {len(states)} rank(s), '
                      f"this run has {world_size}; every rank takes rank 0's state",
                      logger='current', level=logging.WARNING)
            rank = 0
        self._pending = states[rank]

    def before_train(self, runner: Any) -> None:
        """Restores the pending state now (epoch loop) or after the dataloader fast-forward (iter loop)."""
        state, self._pending = self._pending, None
        if state is None:
            return
        loop = runner.train_loop
        skip = loop.iter if hasattr(loop, 'dataloader_iterator') else 0
        if skip > 0:
            loop.dataloader_iterator = _RestoreAfter(loop, skip, state)
        else:
            set_rng_state(state)
        print_log(f'[mmdet_ohem] RNGStateHook: continuing with the RNG state saved at iter {loop.iter}',
                  logger='current')
