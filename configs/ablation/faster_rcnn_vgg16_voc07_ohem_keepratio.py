# Ablation: OHEM "mmdet's flavour" - the 1:3 fg:bg ratio kept (25% fg quota, pools mined separately),
# ranked by classification loss only, no loss-NMS; bg_lo = 0, 64 RoIs/image, N = 2, lr 0.001.
# Not a paper row: it is what mmdet's built-in OHEMSampler does (mmdet 3.3's ohem_sampler.py).
_base_ = '../ohem/faster_rcnn_vgg16_ohem_voc07.py'
model = dict(
    train_cfg=dict(
        rcnn=dict(sampler=dict(keep_ratio=True, pos_fraction=0.25, ranking_loss='cls', nms=None))))
