"""Compatibility fixes for the mmdet 3.3 / mmengine 0.10 / torch >= 2.6 stack."""
from .mmcv_bf16 import mmcv_roi_layers_accept_bfloat16
from .torch_load import allow_mmengine_checkpoints, mmengine_checkpoint_globals, patch_history_buffer_pickling

__all__ = ['allow_mmengine_checkpoints', 'mmengine_checkpoint_globals', 'patch_history_buffer_pickling',
           'mmcv_roi_layers_accept_bfloat16']
