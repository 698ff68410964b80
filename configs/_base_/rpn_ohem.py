# RPN hard-anchor mining (mmdet_ohem.RPNOHEMSampler), shared by configs/rpn_ohem/*. Used as
#   model = dict(train_cfg=dict(rpn=dict(sampler={{_base_.rpn_ohem_sampler}})))
# Per image, every non-ignored anchor (MaxIoUAssigner: fg IoU >= 0.7, bg IoU < 0.3) is ranked by its current
# RPN loss (objectness + box loss of positives), loss-NMS at IoU 0.7 on the anchor boxes removes
# near-duplicates, the 256 hardest are trained on, no fg:bg ratio (RandomSampler's pos_fraction 0.5 is
# dropped). The sampler gives the config's RPNHead the hard-anchor mixin (its class becomes OHEMRPNHead);
# nothing else changes.
rpn_ohem_sampler = dict(
    _delete_=True,
    type='RPNOHEMSampler',
    num=256,
    ranking_loss='cls+loc',
    nms=dict(type='LossNMS', iou_threshold=0.7, per_class=False),
    keep_ratio=False)
