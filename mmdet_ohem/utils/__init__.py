"""Helpers shared by the tools, sweeps, benchmarks and tests."""
from .config_tools import (add_custom_import, config_path, drop_pretrained, rcnn_train_cfgs, set_rcnn_sampler,
                           use_roi_align)

__all__ = ['add_custom_import', 'config_path', 'drop_pretrained', 'rcnn_train_cfgs', 'set_rcnn_sampler', 'use_roi_align']
