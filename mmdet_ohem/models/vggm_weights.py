"""ImageNet VGG_CNN_M_1024 weights for the ``VGGM`` backbone and ``VGGMBBoxHead`` (fc6/fc7).

Fast R-CNN initialises VGGM from ``VGG_CNN_M_1024.v2.caffemodel`` (Caffe, BGR input in 0-255 with the
pixel mean subtracted). Nothing here downloads: the user converts the file they have once with
``tools/convert_vggm_caffe.py``, which reads the ``.caffemodel`` with a small protobuf wire-format reader
(:func:`read_caffemodel`; no Caffe and no protobuf package needed) and writes
``backbone.features.conv{1..5}.*`` and ``roi_head.bbox_head.shared_fcs.{0,1}.*`` (fc6, fc7; the ImageNet
classifier fc8 is dropped).

* :func:`convert_vggm` does the renaming, from a ``.caffemodel``'s blobs or from a flat
  ``{'conv1.weight': ..., 'conv1.bias': ..., 'fc6.weight': ...}`` dict.
* ``VGGMPretrained`` is the mmengine weight initializer used by the VGGM configs (``part='backbone'`` or
  ``'fc67'``); it accepts a converted file, a raw ``.caffemodel`` or a checkpoint of the detector.
"""
from __future__ import annotations

import os
import re
import struct
from collections import OrderedDict
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner.checkpoint import CheckpointLoader

from .vgg_weights import BACKBONE_PREFIX, FC67_PREFIX, VGG16Pretrained
from .vggm import VGGM_LAYERS

__all__ = ['read_caffemodel', 'convert_vggm', 'load_vggm_file', 'VGGMPretrained', 'VGGM_FC_MAP']

#: Caffe fc layer -> box head module (fc8 is dropped).
VGGM_FC_MAP = {'fc6': 'shared_fcs.0', 'fc7': 'shared_fcs.1'}
CONVERT_HINT = 'python tools/convert_vggm_caffe.py VGG_CNN_M_1024.v2.caffemodel checkpoints/vggm1024_frcn_init.pth'


# ---------------------------------------------------------------- protobuf wire format (caffe.proto subset)
def _varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError('truncated varint: not a complete .caffemodel')
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[Tuple[int, int, object]]:
    """Yields ``(field number, wire type, value)``: an int (varint), a memoryview (length-delimited) or
    raw bytes (fixed32/fixed64)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise ValueError('truncated length-delimited field: not a complete .caffemodel')
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        elif wire == 1:
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        else:
            raise ValueError(f'unsupported protobuf wire type {wire} (field {field}): not a .caffemodel?')
        yield field, wire, value


def _blob(buf: memoryview) -> np.ndarray:
    """``BlobProto``: shape (7: BlobShape.dim = 1) or legacy num/channels/height/width (1-4); data
    (5: float, packed or not) or double_data (8)."""
    dims: List[int] = []
    legacy = [0, 0, 0, 0]
    floats: List[np.ndarray] = []
    for field, wire, value in _fields(buf):
        if field == 7 and wire == 2:
            for f2, w2, v2 in _fields(value):
                if f2 == 1 and w2 == 2:  # packed int64 dims
                    p = 0
                    while p < len(v2):
                        d, p = _varint(v2, p)
                        dims.append(d)
                elif f2 == 1 and w2 == 0:
                    dims.append(v2)
        elif 1 <= field <= 4 and wire == 0:
            legacy[field - 1] = value
        elif field == 5 and wire == 2:
            floats.append(np.frombuffer(value, dtype='<f4'))
        elif field == 5 and wire == 5:
            floats.append(np.array(struct.unpack('<f', value), dtype='<f4'))
        elif field == 8 and wire == 2:
            floats.append(np.frombuffer(value, dtype='<f8').astype(np.float32))
    data = np.concatenate(floats) if floats else np.zeros(0, np.float32)
    shape = dims or [d for d in legacy if d > 0] or [data.size]
    if int(np.prod(shape)) != data.size:
        raise ValueError(f'caffemodel blob has {data.size} values but shape {shape}')
    return data.reshape(shape).astype(np.float32, copy=True)


def read_caffemodel(path: str) -> 'OrderedDict[str, List[np.ndarray]]':
    """Reads a binary Caffe ``NetParameter`` (``.caffemodel``): layer name -> its blobs (weights, bias).

    Both layer formats are read: ``layer`` (field 100, ``LayerParameter``: name 1, blobs 7) and the
    deprecated ``layers`` (field 2, ``V1LayerParameter``: name 4, blobs 6). Layers without blobs are left
    out.

    Raises:
        ValueError: If the file is not a well-formed protobuf, or holds no layer with weights.
    """
    with open(path, 'rb') as f:
        buf = memoryview(f.read())
    out: 'OrderedDict[str, List[np.ndarray]]' = OrderedDict()
    for field, wire, value in _fields(buf):
        if wire != 2 or field not in (100, 2):
            continue
        name_field, blob_field = (1, 7) if field == 100 else (4, 6)
        name, blobs = None, []
        for f2, w2, v2 in _fields(value):
            if f2 == name_field and w2 == 2:
                name = bytes(v2).decode('utf-8', 'replace')
            elif f2 == blob_field and w2 == 2:
                blobs.append(_blob(v2))
        if name is not None and blobs:
            out[name] = blobs
    if not out:
        raise ValueError(f'{path!r}: no layer with weights found (not a .caffemodel?)')
    return out


# ---------------------------------------------------------------- renaming
def _as_flat(weights: Mapping) -> Dict[str, torch.Tensor]:
    """``{'conv1': [W, b]}`` (caffemodel) or ``{'conv1.weight': W, 'conv1.bias': b}`` -> the latter."""
    flat: Dict[str, torch.Tensor] = {}
    for k, v in weights.items():
        k = re.sub(r'^module\.', '', str(k))
        if isinstance(v, (list, tuple)):
            for suffix, blob in zip(('weight', 'bias'), v):
                flat[f'{k}.{suffix}'] = torch.as_tensor(np.asarray(blob))
        else:
            flat[k] = torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
    return flat


def convert_vggm(weights: Mapping) -> 'OrderedDict[str, torch.Tensor]':
    """Renames VGG_CNN_M_1024 weights to this project's detector names.

    Args:
        weights: :func:`read_caffemodel`'s output (layer -> ``[weight, bias]``) or a flat dict with
            ``conv1.weight`` ... ``fc7.bias`` (a ``module.`` prefix is tolerated). Caffe's legacy 4-D fc
            blobs (``1 x 1 x out x in``) are flattened to ``out x in``.

    Returns:
        ``backbone.features.conv{1..5}.*`` and ``roi_head.bbox_head.shared_fcs.{0,1}.*``.

    Raises:
        KeyError: If a conv or fc6/fc7 tensor is missing (e.g. a VGG16 or a different net), naming it.
    """
    flat = _as_flat(weights)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for layer in VGGM_LAYERS:
        for p in ('weight', 'bias'):
            key = f'{layer}.{p}'
            if key not in flat:
                raise KeyError(f'not a VGG_CNN_M_1024 file: {key!r} missing (got {sorted(flat)[:6]} ...)')
            t = flat[key].float()
            if layer.startswith('fc'):
                t = t.reshape(t.shape[-2], t.shape[-1]) if p == 'weight' else t.reshape(-1)
                out[f'{FC67_PREFIX}{VGGM_FC_MAP[layer]}.{p}'] = t
            else:
                out[f'{BACKBONE_PREFIX}features.{key}'] = t if p == 'weight' else t.reshape(-1)
    return out


def load_vggm_file(path: str, map_location: str = 'cpu') -> Dict[str, torch.Tensor]:
    """Detector-named VGGM weights from a converted file, a raw ``.caffemodel`` or a detector checkpoint.

    Raises:
        FileNotFoundError: If ``path`` does not exist (the message says how to convert the Caffe file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'VGGM weights {path!r} not found. Nothing is downloaded: convert the '
                                f'Caffe file you have once with `{CONVERT_HINT}` and point the config\'s '
                                f'init_cfg.checkpoint at the output (see docs/experiments.md)')
    if path.endswith('.caffemodel'):
        return dict(convert_vggm(read_caffemodel(path)))
    ckpt = CheckpointLoader.load_checkpoint(path, map_location=map_location)
    sd = ckpt.get('state_dict', ckpt) if isinstance(ckpt, Mapping) else ckpt
    if not isinstance(sd, Mapping):
        raise TypeError(f'{path!r} holds a {type(sd).__name__}, expected a state dict')
    sd = {re.sub(r'^module\.', '', k): v for k, v in sd.items()}
    if any(k.startswith(BACKBONE_PREFIX) for k in sd):
        return sd
    return dict(convert_vggm(sd))


@WEIGHT_INITIALIZERS.register_module()
class VGGMPretrained(VGG16Pretrained):
    """mmengine initializer: ImageNet VGG_CNN_M_1024 weights into ``VGGM`` or ``VGGMBBoxHead``'s fc6/fc7.

    Args:
        part: ``'backbone'`` (conv1-conv5) or ``'fc67'`` (``shared_fcs.0``/``.1`` of the box head).
        checkpoint: Local path: the output of ``tools/convert_vggm_caffe.py``, the raw ``.caffemodel``, or
            a checkpoint of this detector. Required; nothing is downloaded.
        map_location: Where to load tensors.

    Raises:
        ValueError: If ``part`` is unknown or ``checkpoint`` is empty; when called, if a tensor is missing
            or its shape differs from the module's (named).
        FileNotFoundError: When called, if the file does not exist.
    """

    def __init__(self, part: str = 'backbone', checkpoint: Optional[str] = None,
                 map_location: str = 'cpu') -> None:
        if not checkpoint:
            raise ValueError(f'VGGMPretrained: checkpoint must be a local file; convert yours with `{CONVERT_HINT}`')
        super().__init__(part=part, checkpoint=checkpoint, map_location=map_location)

    def detector_state_dict(self) -> Dict[str, torch.Tensor]:
        """The file's VGGM tensors under the detector's names (:func:`load_vggm_file`)."""
        return load_vggm_file(self.checkpoint, self.map_location)
