"""Distributed training on CPU-only machines (gloo), which mmengine 0.10.7 cannot start by itself.

mmengine's ``init_dist`` calls ``torch.cuda.set_device(local_rank)`` before creating the process group,
which fails on a CPU-only torch build (``AttributeError: module 'torch._C' has no attribute
'_cuda_setDevice'``), and its default DDP wrapper passes ``device_ids=[local_rank]``, which DDP rejects
for a CPU model. :func:`prepare_cpu_distributed` fixes both before the ``Runner`` is built: it creates the
gloo process group from torchrun's environment (mmengine then sees it initialised and skips its own
``init_dist``) and sets ``model_wrapper_cfg`` so that DDP gets ``device_ids=None``. On a machine with CUDA
it does nothing: mmengine's own NCCL path is used unchanged.

:func:`shutdown_distributed` ends a distributed run (CPU or GPU) before the interpreter exits. Without it
a gloo run could abort at exit, after training had finished ("terminate called without an active
exception", SIGABRT): a gloo worker thread that still held the last collective's work (mmengine's
``all_gather_object``) released its tensors while Python was finalizing; their Python objects need the
GIL, CPython ends a thread that asks for it then, and that thread exit unwinds through a C++ destructor.
Destroying the process group joins those threads while Python is alive.
"""
from __future__ import annotations

import datetime
import gc
import logging
import os
from typing import Any, MutableMapping, Optional

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log

# Imported before any process group exists: its functions' ``group=group.WORLD`` defaults are evaluated at
# import, and imported after ``init_process_group`` they would keep the default group alive for good, so
# that destroy_process_group could not join its threads (mmengine.runner imports it early too).
if torch_dist.is_available():
    import torch.distributed.nn.functional  # noqa: F401

__all__ = ['prepare_cpu_distributed', 'shutdown_distributed', 'gloo_threads']

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


def gloo_threads() -> Optional[int]:
    """The number of this process's threads that are gloo's (``pt_gloo_runloop`` workers, ``gloo_tcp_loop``).

    Returns None where thread names cannot be read (no ``/proc/self/task``, i.e. not Linux).
    """
    try:
        tids = os.listdir('/proc/self/task')
    except OSError:
        return None
    count = 0
    for tid in tids:
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        count += name.startswith(('pt_gloo', 'gloo_'))
    return count


def shutdown_distributed() -> bool:
    """Ends a distributed run: a barrier, then destroys every process group, while Python is alive.

    Call it after the last collective, with the model wrapper (DDP, which holds the process group)
    released, e.g. after ``del runner`` (``tools/train.py`` and ``tools/test.py`` do). A no-op without
    an initialised process group.

    Returns:
        True if it destroyed a process group, False if there was none.

    Logs a warning if gloo's threads outlive the group (something still holds it, e.g. a model wrapper
    that was not released): the exit may then abort as described in this module's docstring.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    gc.collect()  # the DDP wrapper and its reducer, which hold the group, sit in reference cycles
    torch_dist.barrier()  # no rank tears down while another is still in a collective
    torch_dist.destroy_process_group()
    gc.collect()
    left = gloo_threads()
    if left:
        print_log(f'[mmdet_ohem] {left} gloo threads outlived destroy_process_group(): something still holds '
                  f'the process group (a DDP-wrapped model not released?); the exit may abort', logger='current',
                  level=logging.WARNING)
    return True
