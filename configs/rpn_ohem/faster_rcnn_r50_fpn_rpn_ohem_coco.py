# Not a paper row: mmdet's Faster R-CNN R50-FPN 1x COCO (frcn/faster_rcnn_r50_fpn_coco.py) with OHEM in the
# RPN alone: 256 hardest anchors/image over all FPN levels, loss-NMS 0.7, no ratio (_base_/rpn_ohem.py).
_base_ = ['../frcn/faster_rcnn_r50_fpn_coco.py', '../_base_/rpn_ohem.py']
model = dict(train_cfg=dict(rpn=dict(sampler={{_base_.rpn_ohem_sampler}})))
