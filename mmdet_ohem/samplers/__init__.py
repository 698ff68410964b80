"""mmdet adapter: the registered ``OHEMSampler`` and ``LossNMS`` components, and ``UniformSampler``."""
from .loss_nms import LossNMS
from .ohem_sampler import MiningStats, MMDetOHEMSampler, OHEMSampler
from .uniform_sampler import UniformSampler

__all__ = ['LossNMS', 'OHEMSampler', 'MMDetOHEMSampler', 'MiningStats', 'UniformSampler']
