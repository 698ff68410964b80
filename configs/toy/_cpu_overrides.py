# CPU overrides shared by configs/toy/*.py: ONLY what a 2-core CPU without downloads needs. Each toy
# config inherits its real VGG16/VOC07 config plus this file, and merges these dicts into the real ones
# (`model = {{_base_.cpu_model}}` etc.), so the method settings (assigner bg_lo, sampler, B, N, loss-NMS)
# stay exactly those of the real config. Every change, and why:
# * data: the toy VOC2007-format set from tools/make_toy_voc.py (data/toy_voc, 160 px images, 4 shape
#   classes), read by mmdet's VOCDataset unchanged; images kept at their own size (real: 600 x 1000).
# * backbone: the same VGG16 (13 convs, stride 16, no pool5) at 1/8 width (base_channels 8 -> conv5
#   width 64); fc6/fc7 128 wide (real 4096). No ImageNet weights (no download, and they don't fit a narrow
#   net), so the convs get Kaiming init and none are frozen (real: conv1-2 frozen, pretrained).
# * anchors: scales 1.5/2.5/3.5 x stride 16 = 24-56 px, matching 160 px images (real: 128-512 px for 600 px).
# * RoIAlign instead of RoIPool: mmcv 2.1 has no CPU RoIPool kernel.
# * schedule: 1200 iterations, lr 0.01 (from-scratch training needs a larger lr than fine-tuning's
#   0.001), x0.1 at 900, linear warm-up over the first 100; checkpoint every 300 (resumable runs).
# * dataloaders: no worker processes (the 2 cores do the training), test on the toy test split.
toy_data_root = 'data/toy_voc/'
toy_classes = ('circle', 'square', 'triangle', 'cross')
toy_iters = 1200
toy_image_scale = (160, 160)
cpu_model = dict(
    backbone=dict(base_channels=8, frozen_stages=0, init_cfg=dict(_delete_=True, type='Kaiming', layer='Conv2d')),
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[1.5, 2.5, 3.5])),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(_delete_=True, type='RoIAlign', output_size=7, sampling_ratio=0), out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=128, num_classes=len(toy_classes), init_cfg=None)))
cpu_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=toy_image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
cpu_test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=toy_image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
cpu_train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=toy_data_root, metainfo=dict(classes=toy_classes), pipeline=cpu_train_pipeline))
cpu_test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=toy_data_root, metainfo=dict(classes=toy_classes), pipeline=cpu_test_pipeline))
cpu_train_cfg = dict(max_iters=toy_iters, val_interval=toy_iters)
cpu_param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=toy_iters, by_epoch=False, milestones=[900], gamma=0.1)
]
cpu_optim_wrapper = dict(optimizer=dict(lr=0.01))
cpu_default_hooks = dict(checkpoint=dict(interval=300, max_keep_ckpts=1))
