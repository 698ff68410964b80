"""Compatibility fixes for the mmdet 3.3 / mmengine 0.10 / mmcv 2.1 / torch >= 2.6 stack (behaviour-preserving)."""
from .mmcv_bf16 import mmcv_roi_layers_accept_bfloat16
from .package_configs import package_config_dir, register_package_configs
from .torch_load import allow_mmengine_checkpoints, mmengine_checkpoint_globals, patch_history_buffer_pickling

__all__ = ['allow_mmengine_checkpoints', 'mmengine_checkpoint_globals', 'patch_history_buffer_pickling',
           'mmcv_roi_layers_accept_bfloat16', 'package_config_dir', 'register_package_configs']
