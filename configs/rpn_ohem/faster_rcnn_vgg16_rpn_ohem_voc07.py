# Not a paper row (the paper mines RoIs only): frcn/faster_rcnn_vgg16_voc07.py with OHEM in the RPN alone -
# 256 hardest anchors/image after loss-NMS 0.7, no fg:bg ratio (_base_/rpn_ohem.py). The R-CNN stage keeps
# the FRCN heuristics (bg_lo 0.1, 1:3 ratio, RandomSampler 64 RoIs/image).
_base_ = ['../frcn/faster_rcnn_vgg16_voc07.py', '../_base_/rpn_ohem.py']
model = dict(train_cfg=dict(rpn=dict(sampler={{_base_.rpn_ohem_sampler}})))
