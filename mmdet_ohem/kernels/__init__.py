"""GPU kernels for the read-only pass (Triton), each equal to the mmcv op it stands in for."""
from .roi_align import fast_roi_align_layers, readonly_roi_align
from .roi_pool import fast_roi_pool_layers, readonly_roi_pool, roi_pool_from_bounds, triton_available

__all__ = ['fast_roi_align_layers', 'fast_roi_pool_layers', 'readonly_roi_align', 'readonly_roi_pool',
           'roi_pool_from_bounds', 'triton_available']
