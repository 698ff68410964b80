# Paper row: Table 1 "All RoIs" (B = 2048, N = 2), VGGM: every RoI trained on (UniformSampler up to
# 1024/img), bg_lo = 0, no ratio, lr 0.004 (the paper's value for VGGM).
_base_ = '../frcn/faster_rcnn_vggm_voc07.py'
model = dict(
    train_cfg=dict(
        rcnn=dict(
            assigner=dict(neg_iou_thr=(0.0, 0.5)),
            sampler=dict(_delete_=True, type='UniformSampler', num=1024))))
optim_wrapper = dict(optimizer=dict(lr=0.004))
