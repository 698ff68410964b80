# VOC2007 for Fast R-CNN on precomputed proposals (the paper's protocol: selective-search boxes).
# Each split needs a proposal file (path relative to data_root, or absolute): a pickle holding a dict
#   {'JPEGImages/000005.jpg': {'bboxes': float32 (n, 4) x1y1x2y2 in ORIGINAL image pixels,
#                               'scores': float32 (n,)  (optional)}, ...}
# with one entry per image of the split (key = "<image folder>/<file name>", what mmdet's
# BaseDetDataset.load_proposals looks up). Boxes are resized/flipped with the image.
_base_ = './voc07_frcn.py'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadProposals', num_max_proposals=2000),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='ProposalBroadcaster', transforms=[
        dict(type='Resize', scale=(1000, 600), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
    ]),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadProposals', num_max_proposals=None),
    dict(type='ProposalBroadcaster', transforms=[dict(type='Resize', scale=(1000, 600), keep_ratio=True)]),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    dataset=dict(proposal_file='proposals/voc_2007_trainval.pkl', pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(proposal_file='proposals/voc_2007_test.pkl', pipeline=test_pipeline))
test_dataloader = val_dataloader
