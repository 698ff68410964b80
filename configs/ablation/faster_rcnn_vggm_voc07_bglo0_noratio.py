# Paper row: FRCN without both heuristics, VGGM: bg_lo = 0 and no ratio (UniformSampler 64/img), N = 2,
# lr 0.001 - the candidate pool of OHEM sampled at random. Paper: OHEM is +4.8 mAP over it on VGGM.
_base_ = '../frcn/faster_rcnn_vggm_voc07.py'
model = dict(
    train_cfg=dict(
        rcnn=dict(
            assigner=dict(neg_iou_thr=(0.0, 0.5)),
            sampler=dict(_delete_=True, type='UniformSampler', num=64))))
