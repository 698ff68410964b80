# Paper row: the COCO test-dev table, "OHEM" on MS COCO (VGG16; paper: test-dev AP 22.6, AP50 42.5). Protocol as
# frcn/faster_rcnn_vgg16_coco.py (train2017 -> val2017). OHEM: bg_lo 0, no ratio, loss-NMS 0.7,
# 64 hardest RoIs/image, N = 2.
_base_ = ['../frcn/faster_rcnn_vgg16_coco.py', '../_base_/ohem_rcnn.py']
model = dict(train_cfg=dict(rcnn={{_base_.ohem_rcnn}}))
