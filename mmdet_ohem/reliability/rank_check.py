"""Checks that all ranks of a distributed run hold the same weights.

DDP keeps replicas identical by averaging gradients, but a rank can drift silently (a buffer updated
differently, a parameter outside DDP's reducer, non-deterministic kernels with different inputs).
:class:`WeightsDigestHook` hashes every parameter and buffer of the model on every rank, gathers the
digests, logs them, and raises if they differ. Each rank also writes its digest to
``<work_dir>/weights_digest_rank<k>.txt`` at the end of training, so the result can be checked from
outside the run.
"""
from __future__ import annotations

import hashlib
import os.path as osp
from typing import Any, Mapping, Optional, Union

import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn

__all__ = ['WeightsDigestHook', 'weights_digest']


def weights_digest(weights: Union[nn.Module, Mapping[str, torch.Tensor]]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of all parameters and buffers, in order.

    Args:
        weights: A model (its ``state_dict()`` is hashed) or a state dict, e.g. a checkpoint's.
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


@HOOKS.register_module()
class WeightsDigestHook(Hook):
    """Gathers every rank's weights digest; logs it and raises if ranks disagree.

    Args:
        interval: Also check every ``interval`` training iterations (``None``: only at the end).
    """

    priority = 'LOW'

    def __init__(self, interval: Optional[int] = None) -> None:
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0):
            raise ValueError(f'WeightsDigestHook: interval must be a positive int or None, got {interval!r}')
        self.interval = interval

    def _check(self, runner: Any, write: bool) -> str:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        local = weights_digest(model)
        rank, world_size = get_dist_info()
        digests = all_gather_object(local) if world_size > 1 else [local]
        print_log(f'[mmdet_ohem] weights digest after iter {runner.iter}: '
                  + ', '.join(f'rank{r}={d[:16]}' for r, d in enumerate(digests)), logger='current')
        if write:
            with open(osp.join(runner.work_dir, f'weights_digest_rank{rank}.txt'), 'w') as f:
                f.write(local + '\n')
        if len(set(digests)) > 1:
            raise RuntimeError(f'ranks hold different weights after iter {runner.iter}: {digests}')
        return local

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        """Checks every ``interval`` iterations."""
        if self.interval is not None and self.every_n_train_iters(runner, self.interval):
            self._check(runner, write=False)

    def after_train(self, runner: Any) -> None:
        """Checks once more and writes this rank's digest file."""
        self._check(runner, write=True)
