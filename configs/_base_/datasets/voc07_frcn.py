# PASCAL VOC 2007 as in the OHEM paper / Fast R-CNN: train on VOC2007 trainval, test on VOC2007 test,
# 11-point mAP. Train: shorter side 600, longer side at most 1000, horizontal flip 0.5. Test: same scale.
# data_root: the folder holding VOC2007/ (VOCdevkit layout). Unlike mmdet's voc0712.py there is no
# bbox_min_size=32 filter (not the paper's protocol) and no RepeatDataset (iteration-based schedule).
# Class names: VOCDataset's defaults (the 20 VOC classes).
_base_ = 'mmdet::_base_/datasets/voc0712.py'
dataset_type = 'CheckedVOCDataset'  # mmdet's VOCDataset + errors naming the bad file (mmdet_ohem.reliability)
data_root = 'data/VOCdevkit/'
train_dataloader = dict(
    batch_size=2,  # N = 2 images per iteration (the paper's N; per GPU)
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline={{_base_.train_pipeline}},
        backend_args=None))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/')))
test_dataloader = val_dataloader
val_evaluator = dict(type='VOCMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator
