# Faster R-CNN with VGG_CNN_M_1024 ("VGGM", the OHEM paper's smaller network) as in Fast R-CNN /
# py-faster-rcnn: conv1 96 7x7/2 + LRN + max-pool, conv2 256 5x5/2 + LRN + max-pool, conv3-conv5 512 3x3
# (stride 16, conv1 frozen), RPN on conv5 (256-wide 3x3 conv, as py-faster-rcnn's VGG_CNN_M_1024),
# 6x6 RoIPool, fc6 4096 -> fc7 1024 (ReLU, dropout 0.5), then cls and per-class box layers.
# Everything else (anchors, assigners, samplers, losses, test NMS 0.3) is faster_rcnn_vgg16.py's.
# ImageNet init: Fast R-CNN's VGG_CNN_M_1024.v2.caffemodel, converted ONCE by the user (nothing downloads):
#   python tools/convert_vggm_caffe.py VGG_CNN_M_1024.v2.caffemodel checkpoints/vggm1024_frcn_init.pth
# (another path: --cfg-options model.backbone.init_cfg.checkpoint=PATH model.roi_head.bbox_head.init_cfg.checkpoint=PATH).
# Caffe weights expect BGR 0-255 input minus Fast R-CNN's pixel mean, no std: hence the preprocessor below.
_base_ = './faster_rcnn_vgg16.py'
vggm_checkpoint = 'checkpoints/vggm1024_frcn_init.pth'
model = dict(
    data_preprocessor=dict(mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='VGGM',
        channels=(96, 256, 512, 512, 512),
        frozen_stages=1,
        init_cfg=dict(type='VGGMPretrained', part='backbone', checkpoint=vggm_checkpoint)),
    rpn_head=dict(in_channels=512, feat_channels=256),
    roi_head=dict(
        bbox_roi_extractor=dict(roi_layer=dict(type='RoIPool', output_size=6), out_channels=512),
        bbox_head=dict(
            type='VGGMBBoxHead',
            in_channels=512,
            fc6_channels=4096,
            fc_out_channels=1024,
            roi_feat_size=6,
            dropout=0.5,
            init_cfg=dict(_delete_=True, type='VGGMPretrained', part='fc67', checkpoint=vggm_checkpoint))))
