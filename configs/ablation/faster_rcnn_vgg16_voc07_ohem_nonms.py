# Ablation: OHEM without loss-NMS (the paper's de-duplication step off): 64 hardest RoIs/image by loss,
# bg_lo = 0, no ratio, N = 2, lr 0.001. Not a separate Table 1 row.
_base_ = '../ohem/faster_rcnn_vgg16_ohem_voc07.py'
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(nms=None))))
