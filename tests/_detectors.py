"""Test-side names for the shared detector helpers in :mod:`ohem_experiments.quick_detectors`."""
from ohem_experiments.quick_detectors import (CASCADE_FPN, DOUBLE_HEAD, FASTER_C4, FASTER_FPN, MASK_FPN,  # noqa: F401
                                    mmdet_config, train_step)
from ohem_experiments.quick_detectors import build_detector as build  # noqa: F401
from ohem_experiments.quick_detectors import synthetic_batch as batch  # noqa: F401
