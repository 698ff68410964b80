# Paper row: Table 1 "FRCN" (VGG16) under the paper's own protocol: Fast R-CNN trained and tested on
# precomputed proposals (selective search, up to 2000/image) instead of an RPN. Paper: 67.2 / 66.9.
# FRCN heuristics (bg_lo 0.1, 1:3 ratio), B = 128 over N = 2, lr 0.001, 40k iterations, VOC07.
# Proposal files (see _base_/datasets/voc07_frcn_proposals.py for the format):
#   <data_root>/proposals/voc_2007_trainval.pkl and voc_2007_test.pkl
_base_ = [
    '../_base_/models/fast_rcnn_vgg16.py', '../_base_/datasets/voc07_frcn_proposals.py',
    '../_base_/schedules/frcn_40k.py', '../_base_/default_runtime_iter.py'
]
