# Paper row: "FRCN + M + B" (VOC07 test, VGG16; paper: FRCN 72.4, OHEM 75.1): multi-scale training and
# testing (see faster_rcnn_vgg16_voc07_ms.py; test with --tta) plus iterative box regression with weighted voting (see
# faster_rcnn_vgg16_voc07_b.py). With --tta, voting runs within each test scale and DetTTAModel merges the scales by NMS 0.3.
_base_ = ['./faster_rcnn_vgg16_voc07_ms.py', '../_base_/iter_bbox_reg.py']
model = dict(roi_head={{_base_.iter_bbox_roi_head}})
