# "B" of the OHEM paper (after MR-CNN): iterative bounding-box regression with weighted voting at test
# time. Parts only: the *_b configs set `model = dict(roi_head={{_base_.iter_bbox_roi_head}})`, which
# changes the RoI head's type (training is unchanged) and adds the voting settings. At test time the
# proposals are scored and regressed, the regressed boxes are scored and regressed again, both sets are
# pooled, per-class NMS runs at test_cfg.rcnn.nms (IoU 0.3 in these configs), and each kept box becomes
# the score-weighted mean of the pooled boxes of its class with IoU >= 0.5 to it.
iter_bbox_roi_head = dict(type='IterBBoxRegRoIHead', num_iters=2, vote_iou=0.5)
