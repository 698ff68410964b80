"""VOC dataset whose annotation and image errors name the file.

mmdet's ``XMLDataset.parse_data_info`` lets a malformed annotation fail with e.g.
``ParseError: not well-formed (invalid token): line 3, column 4`` or
``AttributeError: 'NoneType' object has no attribute 'find'``, without saying which of thousands of XML
files is broken, and a missing image only fails when the data pipeline first reaches it, possibly hours
into training. :class:`CheckedVOCDataset` parses exactly as mmdet does, but:

* any error while parsing an annotation becomes :class:`AnnotationError` naming the XML file (and the
  field, for a missing or non-numeric one);
* at build time (before training starts) it checks that every listed image exists and raises
  :class:`MissingImageError` naming the first missing files.

It is registered under its own name only, ``CheckedVOCDataset`` (mmdet's ``VOCDataset`` is untouched):
a config opts in with ``dataset=dict(type='CheckedVOCDataset', ...)`` after
``custom_imports=dict(imports=['mmdet_ohem', 'mmdet_ohem.reliability'])``, as this project's configs do.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, List, Union

from mmdet.datasets import VOCDataset as _MMDetVOCDataset
from mmdet.registry import DATASETS

__all__ = ['AnnotationError', 'MissingImageError', 'CheckedVOCDataset']


class AnnotationError(ValueError):
    """An annotation file is missing, malformed or lacks a required field."""


class MissingImageError(FileNotFoundError):
    """Images listed by the dataset do not exist."""


def _field_hint(err: Exception) -> str:
    if isinstance(err, AttributeError) and "'NoneType'" in str(err):
        return ' (a required element such as <bndbox>, <name>, <xmin>..<ymax> or <width>/<height> is missing)'
    if isinstance(err, (TypeError, ValueError)) and not isinstance(err, AnnotationError):
        return ' (a coordinate or size field is empty or not a number)'
    return ''


@DATASETS.register_module(name='CheckedVOCDataset')
class CheckedVOCDataset(_MMDetVOCDataset):
    """mmdet's ``VOCDataset`` with errors that name the bad file, and a missing-image check at build.

    Args:
        check_images: Check at build time that every image file exists (local files only; skipped for
            remote ``backend_args``). Default True.
        **kwargs: ``VOCDataset``/``XMLDataset`` arguments.

    Raises:
        AnnotationError: If an annotation file is missing or cannot be parsed; names the file.
        MissingImageError: If ``check_images`` and images are missing; names them.
    """

    def __init__(self, *args: Any, check_images: bool = True, **kwargs: Any) -> None:
        self.check_images = check_images
        super().__init__(*args, **kwargs)

    def parse_data_info(self, img_info: dict) -> Union[dict, List[dict]]:
        """mmdet's parsing; a failure becomes :class:`AnnotationError` naming the XML file."""
        xml_path = img_info['xml_path']
        try:
            return super().parse_data_info(img_info)
        except FileNotFoundError as err:
            if osp.isfile(xml_path):  # no <size> in the XML, so mmdet read the image to get it
                raise MissingImageError(f'image {err.filename or img_info["file_name"]} not found (needed '
                                        f'for its size: annotation {xml_path} has no <size>)') from err
            raise AnnotationError(f'annotation file {xml_path} not found (image id {img_info["img_id"]!r}, '
                                  f'listed in {self.ann_file})') from err
        except Exception as err:  # noqa: BLE001 - any parse failure: name the file, keep the cause
            raise AnnotationError(f'malformed VOC annotation {xml_path}: {type(err).__name__}: {err}'
                                  f'{_field_hint(err)}') from err

    def load_data_list(self) -> List[dict]:
        """Parses all annotations, then checks that the images exist."""
        data_list = super().load_data_list()
        if self.check_images and not self.backend_args:
            missing = [d['img_path'] for d in data_list if not osp.isfile(d['img_path'])]
            if missing:
                shown = ', '.join(missing[:5]) + (f' and {len(missing) - 5} more' if len(missing) > 5 else '')
                raise MissingImageError(f'{len(missing)} of {len(data_list)} images listed in {self.ann_file} '
                                        f'do not exist: {shown}')
        return data_list
