"""Compatibility fixes for the mmdet 3.3 / mmengine 0.10 / torch >= 2.6 stack (behaviour-preserving)."""
from .package_configs import package_config_dir, register_package_configs
from .torch_load import allow_mmengine_checkpoints, mmengine_checkpoint_globals, patch_history_buffer_pickling

__all__ = ['allow_mmengine_checkpoints', 'mmengine_checkpoint_globals', 'patch_history_buffer_pickling',
           'package_config_dir', 'register_package_configs']
