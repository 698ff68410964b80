# Paper row: the VOC 2012 test table, "OHEM" on VOC2012 (paper, VOC12 trainval -> VOC12 test
# server: 69.8). Local protocol as frcn/faster_rcnn_vgg16_voc12.py (train -> val): not comparable with the paper's number.
# OHEM: bg_lo 0, no ratio, loss-NMS 0.7, 64 hardest RoIs/image, N = 2.
_base_ = ['../frcn/faster_rcnn_vgg16_voc12.py', '../_base_/ohem_rcnn.py']
model = dict(train_cfg=dict(rcnn={{_base_.ohem_rcnn}}))
