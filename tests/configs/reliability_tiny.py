# Tiny CPU run of the paper's OHEM config for the reliability tests (kill + resume, 2-process gloo,
# --amp): configs/ohem/faster_rcnn_vgg16_ohem_voc07.py with the VGG16 narrowed to base width 8, 64 px
# toy-VOC images, RoIAlign, few proposals, checkpoints every 2 iterations and deterministic CPU settings.
# The tests generate the toy data and pass its folder:
#   --cfg-options train_dataloader.dataset.data_root=<dir holding VOC2007/>
_base_ = '../../configs/ohem/faster_rcnn_vgg16_ohem_voc07.py'

classes = ('circle', 'square', 'triangle', 'cross')  # ohem_experiments.toy_voc.DEFAULT_CLASSES
max_iters = 12
model = dict(
    backbone=dict(base_channels=8, frozen_stages=0, init_cfg=None),
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[2, 4, 8])),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(_delete_=True, type='RoIAlign', output_size=7, sampling_ratio=2), out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=64, num_classes=len(classes), init_cfg=None)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(sampler=dict(num=16))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),  # draws random numbers: resume must restore the RNG state
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root='data/toy_voc/', metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters + 1)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[8], gamma=0.1)]
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2, max_keep_ckpts=-1))
log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
custom_hooks = [dict(type='RNGStateHook'), dict(type='WeightsDigestHook')]
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
