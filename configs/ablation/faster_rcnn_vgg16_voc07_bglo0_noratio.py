# Paper row: FRCN without both heuristics (the "FRCN without the heuristic" OHEM is compared with in the
# Table 1 discussion): bg_lo = 0 and no 1:3 ratio - 64 RoIs/image drawn uniformly from all candidates
# (UniformSampler), N = 2, lr 0.001. The same candidate pool as OHEM, sampled at random instead of by loss.
_base_ = '../frcn/faster_rcnn_vgg16_voc07.py'
model = dict(
    train_cfg=dict(
        rcnn=dict(
            assigner=dict(neg_iou_thr=(0.0, 0.5)),
            sampler=dict(_delete_=True, type='UniformSampler', num=64))))
