# VGG_CNN_M_1024 ("VGGM", the OHEM paper's smaller network) as in Fast R-CNN / py-faster-rcnn, as a swap
# for the VGG16 model: a VGGM config inherits the VGG16 config of the same name plus this file and sets
# `model = {{_base_.vggm_model}}`, so every method setting (assigners, samplers, B, N, schedule, test NMS)
# is that config's, by construction. What changes:
# * backbone: conv1 96 7x7/2 + LRN + max-pool, conv2 256 5x5/2 + LRN + max-pool, conv3-conv5 512 3x3
#   (stride 16), conv1 frozen (lr_mult 0 in the prototxt);
# * RPN 3x3 conv 256 wide (py-faster-rcnn's VGG_CNN_M_1024); RoIPool 6x6; box head fc6 4096 -> fc7 1024
#   (ReLU, dropout 0.5) -> cls / per-class box (VGGMBBoxHead);
# * ImageNet init from Fast R-CNN's VGG_CNN_M_1024.v2.caffemodel, converted ONCE by the user (nothing
#   downloads): python tools/convert_vggm_caffe.py VGG_CNN_M_1024.v2.caffemodel checkpoints/vggm1024_frcn_init.pth
#   (another path: --cfg-options model.backbone.init_cfg.checkpoint=PATH model.roi_head.bbox_head.init_cfg.checkpoint=PATH);
# * input as the Caffe weights expect it: BGR 0-255 minus Fast R-CNN's pixel mean, no std.
vggm_checkpoint = 'checkpoints/vggm1024_frcn_init.pth'
vggm_model = dict(
    data_preprocessor=dict(mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='VGGM',
        channels=(96, 256, 512, 512, 512),
        frozen_stages=1,
        init_cfg=dict(type='VGGMPretrained', part='backbone', checkpoint=vggm_checkpoint)),
    rpn_head=dict(in_channels=512, feat_channels=256),
    roi_head=dict(
        bbox_roi_extractor=dict(roi_layer=dict(output_size=6), out_channels=512),
        bbox_head=dict(
            type='VGGMBBoxHead', in_channels=512, fc6_channels=4096, fc_out_channels=1024, roi_feat_size=6,
            init_cfg=dict(_delete_=True, type='VGGMPretrained', part='fc67', checkpoint=vggm_checkpoint))))
