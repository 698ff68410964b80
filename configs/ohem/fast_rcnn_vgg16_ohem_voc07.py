# Paper row: Table 1 "OHEM" (N = 2, VGG16) under the paper's protocol (Fast R-CNN on precomputed
# proposals). Paper: 69.9. OHEM: bg_lo 0, no ratio, loss-NMS 0.7, 64 hardest RoIs/image, N = 2, lr 0.001.
_base_ = ['../frcn/fast_rcnn_vgg16_voc07.py', '../_base_/ohem_rcnn.py']
model = dict(train_cfg=dict(rcnn={{_base_.ohem_rcnn}}))
