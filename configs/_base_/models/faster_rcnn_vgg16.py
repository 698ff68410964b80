# Faster R-CNN with VGG16 as in the OHEM paper (Shrivastava et al., CVPR 2016) and py-faster-rcnn:
# VGG16 conv1_1..conv5_3 (no pool5, stride 16, conv1-conv2 frozen), RPN on conv5_3 (3 scales x 3 ratios),
# 7x7 RoIPool, fc6/fc7 (4096, ReLU, dropout 0.5), then cls and per-class box layers.
# ImageNet init: torchvision's VGG16 file into the backbone AND fc6/fc7 (`VGG16Pretrained`); for an
# offline file, pass its path (raw torchvision file or the output of tools/convert_vgg16_torchvision.py):
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH model.roi_head.bbox_head.init_cfg.checkpoint=PATH
# CPU runs: mmcv 2.1 has no CPU kernel for RoIPool. Switch to RoIAlign with one line:
#   --cfg-options model.roi_head.bbox_roi_extractor.roi_layer.type=RoIAlign
#   (or in Python: mmdet_ohem.config_tools.use_roi_align(cfg)).
# The types above are registered by `mmdet_ohem` (custom_imports in _base_/default_runtime_iter.py).
vgg16_checkpoint = 'https://download.pytorch.org/models/vgg16-397923af.pth'  # torchvision's vgg16
model = dict(
    type='FasterRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        # torchvision's ImageNet normalisation (the weights' own)
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=16),
    backbone=dict(
        type='VGG16',
        base_channels=64,
        frozen_stages=2,
        init_cfg=dict(type='VGG16Pretrained', part='backbone', checkpoint=vgg16_checkpoint)),
    rpn_head=dict(
        type='RPNHead',
        in_channels=512,
        feat_channels=512,
        anchor_generator=dict(
            type='AnchorGenerator', scales=[8, 16, 32], ratios=[0.5, 1.0, 2.0], strides=[16]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),  # py-faster-rcnn sigma=3
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIPool', output_size=7),
            out_channels=512,
            featmap_strides=[16]),
        bbox_head=dict(
            type='FRCNBBoxHead',
            in_channels=512,
            fc_out_channels=4096,
            dropout=0.5,
            roi_feat_size=7,
            num_classes=20,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
            # added to the head's default init (Normal fc_cls/fc_reg): fc6/fc7 from VGG16's classifier
            init_cfg=dict(type='VGG16Pretrained', part='fc67', checkpoint=vgg16_checkpoint))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        # split_thr: mmcv 2.1's batched_nms takes a second code path above split_thr boxes (default
        # 10,000), NMS per level in turn; with nms_pre=12000 this RPN reaches it, and that path fails under
        # fp16 autocast (`--amp`: half scores, float boxes -> "Index put requires the source and destination
        # dtypes match"). This RPN has ONE level, so the split path would run the same single NMS over the
        # same boxes: never splitting keeps the same boxes with the same scores and needs no more memory
        # (only boxes with exactly equal scores may come out in another order), and `--amp` works.
        rpn_proposal=dict(nms_pre=12000, max_per_img=2000,
                          nms=dict(type='nms', iou_threshold=0.7, split_thr=1_000_000), min_bbox_size=0),
        rcnn=dict(
            # Fast R-CNN heuristics: fg IoU >= 0.5, bg IoU in [bg_lo, 0.5) with bg_lo = 0.1
            assigner=dict(
                type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.5), min_pos_iou=0.5,
                match_low_quality=False, ignore_iof_thr=-1),
            # B = 128 RoIs over N = 2 images: 64 per image, 25% fg (the 1:3 ratio)
            sampler=dict(
                type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
            pos_weight=-1,
            debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=6000, max_per_img=300, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.3), max_per_img=100)))
