# OHEM's R-CNN training settings (the paper's), shared by the VGG16 OHEM configs as `{{_base_.ohem_rcnn}}`:
# bg_lo = 0 - every RoI with IoU < 0.5 is a background candidate; `neg_iou_thr` must stay a tuple, and
#   MaxIoUAssigner's test is `lo <= IoU < hi`, so RoIs with IoU exactly 0 are background too;
# no fg:bg ratio; per image all RoIs are ranked by loss (cls + box) in a read-only pass, loss-NMS at IoU 0.7
#   removes near-duplicates, and the 64 hardest are trained on (B = 128 over N = 2 images).
ohem_rcnn = dict(
    assigner=dict(neg_iou_thr=(0.0, 0.5)),
    sampler=dict(
        _delete_=True,
        type='OHEMSampler',
        num=64,
        add_gt_as_proposals=True,
        ranking_loss='cls+loc',
        nms=dict(type='LossNMS', iou_threshold=0.7, per_class=False),
        keep_ratio=False))
