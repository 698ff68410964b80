"""ImageNet VGG16 weights (torchvision's checkpoint) for the VGG16 backbone and the fc6/fc7 head.

torchvision's ``vgg16`` state dict has ``features.{i}.{weight,bias}`` for the 13 convs and
``classifier.{0,3,6}`` for fc6, fc7 and the 1000-way fc8. The detector keeps the convs index for index
(``backbone.features.{i}``), puts fc6/fc7 into the box head (``roi_head.bbox_head.shared_fcs.{0,1}``, as
the paper initialises them from VGG16's classifier) and drops fc8.

* :func:`convert_torchvision_vgg16` does the renaming (used by ``tools/convert_vgg16_torchvision.py``).
* ``VGG16Pretrained`` is an mmengine weight initializer that does it on the fly, so configs can point
  ``init_cfg`` at the raw torchvision file (URL or path) *or* at a converted file.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Dict, Mapping

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner.checkpoint import CheckpointLoader

from .vgg import vgg16_conv_indices

__all__ = ['TORCHVISION_VGG16_URL', 'BACKBONE_PREFIX', 'FC67_PREFIX', 'convert_torchvision_vgg16',
           'load_vgg16_part', 'VGG16Pretrained', 'save_converted']

#: The standard torchvision ImageNet VGG16 checkpoint (``torchvision.models.vgg16(pretrained=True)``).
TORCHVISION_VGG16_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'
BACKBONE_PREFIX = 'backbone.'
FC67_PREFIX = 'roi_head.bbox_head.'
#: torchvision classifier index -> box head module (fc8 = classifier.6 is dropped).
_FC_MAP = {0: 'shared_fcs.0', 3: 'shared_fcs.1'}
_PARTS = {'backbone': BACKBONE_PREFIX, 'fc67': FC67_PREFIX}


def convert_torchvision_vgg16(state_dict: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Renames a torchvision VGG16 state dict to this project's detector names.

    Args:
        state_dict: torchvision ``vgg16`` weights (``features.*``, ``classifier.*``); a ``module.``
            prefix (DataParallel) is tolerated.

    Returns:
        ``backbone.features.{i}.*`` for the 13 convs and ``roi_head.bbox_head.shared_fcs.{0,1}.*``
        for fc6/fc7.

    Raises:
        KeyError: If a conv or fc6/fc7 tensor is missing (e.g. a VGG16-BN or VGG19 file was given),
            naming the missing key.
    """
    sd = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for i in vgg16_conv_indices():
        for p in ('weight', 'bias'):
            key = f'features.{i}.{p}'
            if key not in sd:
                raise KeyError(f'not a torchvision VGG16 checkpoint: {key!r} missing '
                               f'(got keys like {sorted(sd)[:4]})')
            out[BACKBONE_PREFIX + key] = sd[key]
    for src, dst in _FC_MAP.items():
        for p in ('weight', 'bias'):
            key = f'classifier.{src}.{p}'
            if key not in sd:
                raise KeyError(f'not a torchvision VGG16 checkpoint: {key!r} (fc6/fc7) missing')
            out[f'{FC67_PREFIX}{dst}.{p}'] = sd[key]
    return out


def save_converted(state_dict: Mapping[str, torch.Tensor], dst: str, source: str, converter: str) -> int:
    """Writes a converted ImageNet init file (``{'state_dict': ..., 'meta': ...}``) as the converter tools
    do, creating the folder; returns the number of parameters written."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': dict(state_dict), 'meta': {'source': os.path.basename(source),
                                                         'converter': f'mmdet_ohem {converter}'}}, dst)
    return sum(v.numel() for v in state_dict.values())


def _as_detector_state_dict(ckpt: Mapping) -> Dict[str, torch.Tensor]:
    """Accepts a raw torchvision file, a converted file, or an mmengine checkpoint of our detector."""
    sd = ckpt.get('state_dict', ckpt) if isinstance(ckpt, Mapping) else ckpt
    if not isinstance(sd, Mapping):
        raise TypeError(f'checkpoint holds a {type(sd).__name__}, expected a state dict')
    keys = [re.sub(r'^module\.', '', k) for k in sd]
    if any(k.startswith(BACKBONE_PREFIX) for k in keys):
        return {re.sub(r'^module\.', '', k): v for k, v in sd.items()}
    return dict(convert_torchvision_vgg16(sd))


@WEIGHT_INITIALIZERS.register_module()
class VGG16Pretrained:
    """mmengine initializer: ImageNet VGG16 weights into the ``VGG16`` backbone or the fc6/fc7 head.

    Use it as ``init_cfg`` of the module it fills::

        backbone=dict(type='VGG16', init_cfg=dict(type='VGG16Pretrained', part='backbone'))
        bbox_head=dict(type='FRCNBBoxHead', init_cfg=[..., dict(type='VGG16Pretrained', part='fc67')])

    Args:
        part: ``'backbone'`` (13 convs) or ``'fc67'`` (``shared_fcs.0``/``.1`` of the box head).
        checkpoint: torchvision's file (URL, local path or ``'torchvision://vgg16'``), or a file made by
            ``tools/convert_vgg16_torchvision.py``, or a checkpoint of this detector.
        map_location: Where to load tensors.

    Raises:
        ValueError: If ``part`` is unknown, or (when called) a tensor is missing or its shape does not
            match the module (e.g. a narrowed ``base_channels``/``fc_out_channels`` model), naming it.
    """

    def __init__(self, part: str = 'backbone', checkpoint: str = TORCHVISION_VGG16_URL,
                 map_location: str = 'cpu') -> None:
        if part not in _PARTS:
            raise ValueError(f'{type(self).__name__}: part must be one of {sorted(_PARTS)}, got {part!r}')
        if checkpoint == 'torchvision://vgg16':  # mmengine's torchvision:// needs torchvision installed
            checkpoint = TORCHVISION_VGG16_URL
        self.part = part
        self.checkpoint = checkpoint
        self.map_location = map_location
        self.wholemodule = False

    def __call__(self, module: nn.Module) -> None:
        name = type(self).__name__
        print_log(f'{name}: load {self.part} from {self.checkpoint}', logger='current')
        load_vgg16_part(module, self.detector_state_dict(), self.part, label=name)
        if hasattr(module, '_params_init_info'):
            from mmengine.model.weight_init import update_init_info
            update_init_info(module, init_info=f'{name}({self.part}): load from {self.checkpoint}')

    def detector_state_dict(self) -> Dict[str, torch.Tensor]:
        """The checkpoint's tensors under the detector's names (subclasses read other formats)."""
        ckpt = CheckpointLoader.load_checkpoint(self.checkpoint, map_location=self.map_location)
        return _as_detector_state_dict(ckpt)


def load_vgg16_part(module: nn.Module, detector_sd: Mapping[str, torch.Tensor], part: str,
                    label: str = 'VGG16Pretrained') -> None:
    """Copies the ``part`` tensors of a detector-named state dict into ``module`` (strict on that part).

    ``label`` names the caller in error messages (the VGGM initializer shares this function).

    Raises:
        ValueError: If ``part`` is unknown, a tensor is missing, or a shape differs (named).
    """
    if part not in _PARTS:
        raise ValueError(f'part must be one of {sorted(_PARTS)}, got {part!r}')
    prefix = _PARTS[part]
    sub = {k[len(prefix):]: v for k, v in detector_sd.items() if k.startswith(prefix)}
    if part == 'fc67':
        sub = {k: v for k, v in sub.items() if k.startswith('shared_fcs.')}
    own = module.state_dict()
    missing = [k for k in sub if k not in own]
    if missing or not sub:
        raise ValueError(f'{label}({part}): module {type(module).__name__} has no parameter(s) '
                         f'{missing or "(checkpoint had none for this part)"}')
    for k, v in sub.items():
        if own[k].shape != v.shape:
            raise ValueError(f'{label}({part}): {prefix}{k} has shape {tuple(v.shape)} in the '
                             f'checkpoint but {tuple(own[k].shape)} in the model (narrowed width?)')
    with torch.no_grad():
        for k, v in sub.items():
            own[k].copy_(v.to(own[k].dtype))
