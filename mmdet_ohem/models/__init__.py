"""The paper's model parts for mmdet: the ``VGG16`` backbone, the ``FRCNBBoxHead`` (fc6/fc7 + dropout)
and the ``VGG16Pretrained`` initializer that loads torchvision's ImageNet VGG16 into both."""
from .frcn_head import FRCNBBoxHead
from .vgg import VGG16
from .vgg_weights import TORCHVISION_VGG16_URL, VGG16Pretrained, convert_torchvision_vgg16, load_vgg16_part

__all__ = ['VGG16', 'FRCNBBoxHead', 'VGG16Pretrained', 'convert_torchvision_vgg16', 'load_vgg16_part',
           'TORCHVISION_VGG16_URL']
