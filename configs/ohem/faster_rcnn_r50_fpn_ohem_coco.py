# Not a paper row: our OHEM on mmdet's Faster R-CNN R50-FPN 1x COCO - only the R-CNN sampler changes
# (OHEMSampler, 512 hardest RoIs/image, no ratio, loss-NMS 0.7; mmdet's assigner already has bg_lo 0).
_base_ = '../frcn/faster_rcnn_r50_fpn_coco.py'
model = dict(
    train_cfg=dict(
        rcnn=dict(
            sampler=dict(
                _delete_=True, type='OHEMSampler', num=512, add_gt_as_proposals=True, ranking_loss='cls+loc',
                nms=dict(type='LossNMS', iou_threshold=0.7, per_class=False), keep_ratio=False))))
