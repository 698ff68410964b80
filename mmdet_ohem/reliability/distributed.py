"""Distributed training on CPU-only machines (gloo), which mmengine 0.10.7 cannot start by itself.

mmengine's ``init_dist`` calls ``torch.cuda.set_device(local_rank)`` before creating the process group,
which fails on a CPU-only torch build (``AttributeError: module 'torch._C' has no attribute
'_cuda_setDevice'``), and its default DDP wrapper passes ``device_ids=[local_rank]``, which DDP rejects
for a CPU model. :func:`prepare_cpu_distributed` fixes both before the ``Runner`` is built: it creates the
gloo process group from torchrun's environment (mmengine then sees it initialised and skips its own
``init_dist``) and sets ``model_wrapper_cfg`` so that DDP gets ``device_ids=None``. On a machine with CUDA
it does nothing: mmengine's own NCCL path is used unchanged.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, MutableMapping

import torch
import torch.distributed as torch_dist

__all__ = ['prepare_cpu_distributed']

_TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def prepare_cpu_distributed(cfg: MutableMapping, launcher: str) -> bool:
    """Starts gloo distributed training on CPU for ``launcher='pytorch'``; a no-op elsewhere.

    Call it after loading the config and before ``Runner.from_cfg`` (``tools/train.py`` does).

    Args:
        cfg: The full training config; ``env_cfg.dist_cfg`` and ``model_wrapper_cfg`` are edited in place.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'`` (the ``--launcher`` flag).

    Returns:
        True if it initialised a CPU process group, False if nothing was needed (no launcher, CUDA
        present, or a process group already exists).

    Raises:
        RuntimeError: For ``'slurm'``/``'mpi'`` on a machine without CUDA (mmengine needs a GPU there; use
            torchrun with ``--launcher pytorch``), or when torchrun's environment variables are missing.
    """
    if launcher == 'none' or torch.cuda.is_available() or torch_dist.is_initialized():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(f'--launcher {launcher} needs CUDA with mmengine 0.10.7 (it calls '
                           f'torch.cuda.set_device); on CPU start the processes with torchrun and '
                           f'--launcher pytorch')
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch expects torchrun environment variables, missing {missing}; '
                           f'start with tools/dist_train.sh or torchrun --nproc_per_node=N')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'  # NCCL needs GPUs
    env_cfg['dist_cfg'] = dist_cfg
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None  # DDP on CPU modules
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', bool(cfg.get('find_unused_parameters', False)))
    cfg['model_wrapper_cfg'] = wrapper
    kwargs: dict[str, Any] = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend=dist_cfg['backend'], **kwargs)
    return True
