# Paper row: Table 1 "All RoIs" (B = 2048, N = 2; VGG16): no sampling - every RoI is trained on
# (up to 1024/image = 2048 over 2 images; UniformSampler takes all when there are fewer), bg_lo = 0,
# no ratio, higher lr 0.003 (the paper's value for VGG16). Paper: ~+1 mAP over FRCN.
_base_ = '../frcn/faster_rcnn_vgg16_voc07.py'
model = dict(
    train_cfg=dict(
        rcnn=dict(
            assigner=dict(neg_iou_thr=(0.0, 0.5)),
            sampler=dict(_delete_=True, type='UniformSampler', num=1024))))
optim_wrapper = dict(optimizer=dict(lr=0.003))
