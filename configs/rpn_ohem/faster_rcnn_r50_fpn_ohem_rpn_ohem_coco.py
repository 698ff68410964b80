# Not a paper row: OHEM in both stages of mmdet's Faster R-CNN R50-FPN 1x COCO -
# ohem/faster_rcnn_r50_fpn_ohem_coco.py (512 hardest RoIs/image) plus the RPN miner of _base_/rpn_ohem.py.
_base_ = ['../ohem/faster_rcnn_r50_fpn_ohem_coco.py', '../_base_/rpn_ohem.py']
model = dict(train_cfg=dict(rpn=dict(sampler={{_base_.rpn_ohem_sampler}})))
