"""Test-side names for the shared detector helpers in :mod:`mmdet_ohem.utils.quick`."""
from mmdet_ohem.utils.quick import (CASCADE_FPN, DOUBLE_HEAD, FASTER_C4, FASTER_FPN, MASK_FPN,  # noqa: F401
                                    mmdet_config, train_step)
from mmdet_ohem.utils.quick import build_detector as build  # noqa: F401
from mmdet_ohem.utils.quick import synthetic_batch as batch  # noqa: F401
