# Paper row: "FRCN + B" (VGG16): FRCN with iterative bounding-box regression and weighted voting at test
# time (IterBBoxRegRoIHead: 2 passes pooled, NMS 0.3, voting IoU 0.5). Training is that of faster_rcnn_vgg16_voc07.py.
_base_ = ['./faster_rcnn_vgg16_voc07.py', '../_base_/iter_bbox_reg.py']
model = dict(roi_head={{_base_.iter_bbox_roi_head}})
