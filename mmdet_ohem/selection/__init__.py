"""Pure selection core: loss-NMS and the OHEM selection rules (no mmdet import)."""
from .boxes import invalid_boxes
from .nms import NMSResult, box_iou, greedy_loss_nms, rank_by_loss
from .graph import SelectionGraphs
from .select import (FrontRows, NonFinitePolicy, RankingFront, Selection, select_hard_examples,
                     select_hard_examples_batch, select_hard_examples_front, select_hard_examples_padded,
                     select_hard_examples_ratio)

__all__ = [
    'NMSResult', 'box_iou', 'greedy_loss_nms', 'rank_by_loss', 'NonFinitePolicy', 'Selection',
    'select_hard_examples', 'select_hard_examples_batch', 'select_hard_examples_padded', 'select_hard_examples_ratio',
    'invalid_boxes', 'SelectionGraphs', 'FrontRows', 'RankingFront', 'select_hard_examples_front'
]
