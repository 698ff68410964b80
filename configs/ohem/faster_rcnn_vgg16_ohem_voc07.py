# Paper row: Table 1 "OHEM" (N = 2, VGG16) and the VOC 2007 test table, "OHEM" on VOC07.
# OHEM replaces both FRCN heuristics: bg_lo = 0 (every RoI with IoU < 0.5 is a background candidate)
# and no fg:bg ratio; per image, all RoIs are ranked by loss (cls + box) in a read-only pass, loss-NMS
# at IoU 0.7 removes near-duplicates, the 64 hardest are trained on (B = 128 over N = 2 images).
# Everything else as frcn/faster_rcnn_vgg16_voc07.py. Paper (VGG16, Fast R-CNN on selective search): 69.9.
# neg_iou_thr=(0.0, 0.5): MaxIoUAssigner's tuple test is `lo <= IoU < hi`, so RoIs with IoU exactly 0
# (no overlap with any gt) are background; only ignored RoIs (IoU set to -1) fall outside.
# The OHEM settings themselves are in _base_/ohem_rcnn.py.
_base_ = ['../frcn/faster_rcnn_vgg16_voc07.py', '../_base_/ohem_rcnn.py']
model = dict(train_cfg=dict(rcnn={{_base_.ohem_rcnn}}))
