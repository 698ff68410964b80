# Paper row: the VOC 2007 test table, "OHEM", trained on VOC07+12 trainval, tested on VOC07 test (11-point mAP).
# OHEM (bg_lo 0, no ratio, loss-NMS 0.7, 64 hardest RoIs/image, N = 2) on frcn/faster_rcnn_vgg16_voc0712.py.
# Paper (VGG16, Fast R-CNN on selective search): 74.6.
_base_ = ['../frcn/faster_rcnn_vgg16_voc0712.py', '../_base_/ohem_rcnn.py']
model = dict(train_cfg=dict(rcnn={{_base_.ohem_rcnn}}))
