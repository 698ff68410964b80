"""``--amp`` on CPU: bfloat16 autocast through mmengine's ``AmpOptimWrapper`` interface.

mmengine 0.10.7's ``AmpOptimWrapper`` asserts that a GPU/NPU/MLU/MUSA is present and uses CUDA's
``GradScaler``, although its ``autocast`` helper supports CPU (bfloat16 only). mmdet's ``tools/train.py
--amp`` selects ``AmpOptimWrapper`` by name, so on a CPU machine it fails before training starts.

:class:`AmpOptimWrapper` here subclasses mmengine's and is registered under the same name in mmdet's
``OPTIM_WRAPPERS`` (which configs with ``default_scope='mmdet'`` search first). With an accelerator it is
mmengine's class, unchanged. On CPU it autocasts the forward to bfloat16 and does no loss scaling:
bfloat16 has float32's exponent range, so gradients do not underflow the way float16 ones do (this is
also why torch's CPU autocast has no ``GradScaler`` requirement). float16 on CPU is refused with the
reason.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper as _MMEngineAmpOptimWrapper
from mmengine.optim import OptimWrapper

__all__ = ['AmpOptimWrapper', 'run_mmcv_ops_in_float32_under_cpu_autocast']


# mmcv ops whose CPU kernels take float32 only; under CPU autocast they would receive bfloat16.
_FP32_MMCV_OPS = (('mmcv.ops.nms', 'NMSop'), ('mmcv.ops.roi_align', 'RoIAlignFunction'))


def run_mmcv_ops_in_float32_under_cpu_autocast() -> None:
    """Wraps the ``forward`` of mmcv's CPU-float32-only ops with ``torch.amp.custom_fwd(cast_inputs=float32)``.

    Under CPU autocast the FPN/VGG features and RPN scores are bfloat16, but mmcv 2.1's CPU ``nms`` and
    ``roi_align`` kernels accept float32 only (``RuntimeError: expected scalar type Float but found
    BFloat16``). ``custom_fwd`` casts their floating inputs to float32 and runs them with autocast off,
    exactly as torch does for its own float32-only ops; gradients flow back in the inputs' dtype.
    Outside autocast it changes nothing. Idempotent.
    """
    import importlib
    for module_name, cls_name in _FP32_MMCV_OPS:
        cls = getattr(importlib.import_module(module_name), cls_name)
        fwd = cls.__dict__['forward'].__func__ if isinstance(cls.__dict__['forward'], staticmethod) \
            else cls.__dict__['forward']
        if getattr(fwd, '_mmdet_ohem_fp32', False):
            continue
        wrapped = torch.amp.custom_fwd(fwd, device_type='cpu', cast_inputs=torch.float32)
        wrapped._mmdet_ohem_fp32 = True
        cls.forward = staticmethod(wrapped)


def _has_accelerator() -> bool:
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


@OPTIM_WRAPPERS.register_module(name='AmpOptimWrapper')
class AmpOptimWrapper(_MMEngineAmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper``, plus bfloat16 autocast on CPU-only machines.

    Args:
        loss_scale: As mmengine's (used only with an accelerator; no loss scaling on CPU).
        dtype: As mmengine's; on CPU ``None`` means ``'bfloat16'``, and only bfloat16 is accepted.
        use_fsdp: As mmengine's (accelerators only).
        **kwargs: ``OptimWrapper`` arguments (``optimizer``, ``clip_grad``, ``accumulative_counts``).

    Raises:
        ValueError: On CPU, for a ``dtype`` other than bfloat16 (names the value).
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Optional[Union[str, torch.dtype]] = None,
                 use_fsdp: bool = False,
                 **kwargs: Any) -> None:
        self.on_cpu = not _has_accelerator()
        if not self.on_cpu:
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(f'AmpOptimWrapper on CPU supports dtype bfloat16 only (torch CPU autocast), '
                             f'got {dtype!r}')
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = None
        self.cast_dtype = torch.bfloat16
        run_mmcv_ops_in_float32_under_cpu_autocast()
        MMLogger.get_current_instance().info('[mmdet_ohem] AMP on CPU: bfloat16 autocast, no loss scaling')

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """Plain backward on CPU (no loss scaling); mmengine's scaled backward otherwise."""
        if self.on_cpu:
            OptimWrapper.backward(self, loss, **kwargs)
        else:
            super().backward(loss, **kwargs)

    def step(self, **kwargs: Any) -> None:
        """Plain optimizer step on CPU; mmengine's scaler step otherwise."""
        if self.on_cpu:
            OptimWrapper.step(self, **kwargs)
        else:
            super().step(**kwargs)

    def state_dict(self) -> dict:
        """Optimizer state (and the loss scaler's, with an accelerator)."""
        return OptimWrapper.state_dict(self) if self.on_cpu else super().state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Loads optimizer state; a saved loss-scaler state is ignored on CPU."""
        if self.on_cpu:
            state_dict = dict(state_dict)
            state_dict.pop('loss_scaler', None)
            OptimWrapper.load_state_dict(self, state_dict)
        else:
            super().load_state_dict(state_dict)
