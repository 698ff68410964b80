# Fast R-CNN with VGG16 (the OHEM paper's protocol): the same backbone, RoI head and R-CNN train/test
# settings as faster_rcnn_vgg16.py, trained and tested on precomputed proposals (no RPN).
# Proposal file format: see docs/configs.md ("Precomputed proposals").
_base_ = './faster_rcnn_vgg16.py'
model = dict(
    _delete_=True,
    type='FastRCNN',
    data_preprocessor={{_base_.model.data_preprocessor}},
    backbone={{_base_.model.backbone}},
    roi_head={{_base_.model.roi_head}},
    train_cfg=dict(rcnn={{_base_.model.train_cfg.rcnn}}),
    test_cfg=dict(rcnn={{_base_.model.test_cfg.rcnn}}))
