# Not a paper row: OHEM in both stages - ohem/faster_rcnn_vgg16_ohem_voc07.py (paper OHEM for the RoIs:
# bg_lo 0, no ratio, 64 hardest RoIs/image, loss-NMS 0.7) plus hard-anchor mining in the RPN (256 hardest
# anchors/image, loss-NMS 0.7, no ratio; _base_/rpn_ohem.py).
_base_ = ['../ohem/faster_rcnn_vgg16_ohem_voc07.py', '../_base_/rpn_ohem.py']
model = dict(train_cfg=dict(rpn=dict(sampler={{_base_.rpn_ohem_sampler}})))
