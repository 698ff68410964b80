"""The read-only RoI pass: per-RoI losses of every candidate, computed without a graph."""
from .readonly_pass import RoIHeadAdapter, RoILosses, frozen_norm_stats

__all__ = ['RoIHeadAdapter', 'RoILosses', 'frozen_norm_stats']
