"""Datasets: a deterministic toy VOC2007-format generator for CPU experiments (:mod:`.toy_voc`) and
``CheckedVOCDataset``, a VOC reader whose errors name the bad file (:mod:`.checked_voc`)."""
from .checked_voc import AnnotationError, CheckedVOCDataset, MissingImageError
from .toy_voc import (DEFAULT_CLASSES, HARD_NEGATIVE_KINDS, SUPPORTED_SHAPES, ToyVOCSettings, generate_toy_voc,
                      preview, toy_voc_metainfo)

__all__ = ['generate_toy_voc', 'toy_voc_metainfo', 'preview', 'ToyVOCSettings', 'DEFAULT_CLASSES',
           'SUPPORTED_SHAPES', 'HARD_NEGATIVE_KINDS', 'AnnotationError', 'CheckedVOCDataset', 'MissingImageError']
