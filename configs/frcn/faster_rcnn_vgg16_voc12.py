# Paper row: the VOC 2012 test table, "FRCN" on VOC2012 (paper: trained on VOC12 trainval, scored
# on VOC12 test by the server: 65.7). This config trains on VOC12 train and evaluates locally on VOC12 val (area AP), so its
# number is NOT the paper's; see _base_/datasets/voc12_frcn.py for the server protocol.
# FRCN heuristics (bg_lo 0.1, 1:3 ratio), B = 128 over N = 2, lr 0.001; 80k iterations (the 07+12
# schedule - the VOC12 iteration count is not in our reference).
_base_ = [
    '../_base_/models/faster_rcnn_vgg16.py', '../_base_/datasets/voc12_frcn.py',
    '../_base_/schedules/frcn_80k.py', '../_base_/default_runtime_iter.py'
]
