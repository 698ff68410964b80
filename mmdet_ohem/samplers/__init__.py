"""mmdet adapter: the registered ``OHEMSampler`` and ``LossNMS`` components, ``UniformSampler`` and the RPN's
``RPNOHEMSampler``."""
from .loss_nms import LossNMS
from .ohem_sampler import MiningStats, MMDetOHEMSampler, OHEMSampler
from .rpn_ohem_sampler import RPNOHEMSampler
from .uniform_sampler import UniformSampler

__all__ = ['LossNMS', 'OHEMSampler', 'MMDetOHEMSampler', 'MiningStats', 'UniformSampler', 'RPNOHEMSampler']
