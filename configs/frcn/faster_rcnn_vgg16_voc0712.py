# Paper row: the VOC 2007 test table, "FRCN", trained on VOC07+12 trainval, tested on VOC07 test (11-point mAP).
# FRCN heuristics (bg_lo 0.1, 1:3 ratio), B = 128 over N = 2, lr 0.001 (x0.1 at 30k and 60k), 80k iterations.
# Paper (VGG16, Fast R-CNN on selective search): 70.0.
_base_ = [
    '../_base_/models/faster_rcnn_vgg16.py', '../_base_/datasets/voc0712_frcn.py',
    '../_base_/schedules/frcn_80k.py', '../_base_/default_runtime_iter.py'
]
