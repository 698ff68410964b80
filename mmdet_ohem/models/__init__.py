"""The paper's model parts for mmdet: the ``VGG16`` and ``VGGM`` (VGG_CNN_M_1024) backbones, their box
heads (``FRCNBBoxHead``, ``VGGMBBoxHead``; fc6/fc7 + dropout), the ``VGG16Pretrained``/``VGGMPretrained``
initializers, ``IterBBoxRegRoIHead`` (iterative box regression with weighted voting at test time), and
``OHEMRPNHead`` (``RPNHead`` with hard-anchor mining for ``RPNOHEMSampler``)."""
from .box_voting import box_voting, nms_with_box_voting
from .frcn_head import FRCNBBoxHead
from .iter_bbox_reg import IterBBoxRegRoIHead
from .ohem_anchor_head import AnchorOHEMMixin, OHEMRPNHead
from .vgg import VGG16
from .vgg_weights import TORCHVISION_VGG16_URL, VGG16Pretrained, convert_torchvision_vgg16, load_vgg16_part
from .vggm import VGGM, VGGMBBoxHead
from .vggm_weights import VGGMPretrained, convert_vggm, read_caffemodel

__all__ = ['VGG16', 'FRCNBBoxHead', 'VGG16Pretrained', 'convert_torchvision_vgg16', 'load_vgg16_part',
           'TORCHVISION_VGG16_URL', 'VGGM', 'VGGMBBoxHead', 'VGGMPretrained', 'convert_vggm', 'read_caffemodel',
           'IterBBoxRegRoIHead', 'box_voting', 'nms_with_box_voting', 'OHEMRPNHead', 'AnchorOHEMMixin']
