# Paper row: Table 1 "FRCN" (rows 1-2; VGG16) and the VOC 2007 test table, "FRCN" on VOC07 - the baseline.
# FRCN heuristics on: bg_lo = 0.1 (bg IoU in [0.1, 0.5)), 1:3 fg:bg ratio (RandomSampler 25% fg);
# B = 128 RoIs over N = 2 images (64 per image), lr 0.001, 40k iterations. Train VOC07 trainval,
# test VOC07 test, 11-point mAP. Paper (VGG16, Fast R-CNN on selective search): 67.2 (Table 1) /
# 66.9 (VOC07 table). This model is end-to-end Faster R-CNN; fast_rcnn_vgg16_voc07.py is the paper's protocol.
_base_ = [
    '../_base_/models/faster_rcnn_vgg16.py', '../_base_/datasets/voc07_frcn.py',
    '../_base_/schedules/frcn_40k.py', '../_base_/default_runtime_iter.py'
]
