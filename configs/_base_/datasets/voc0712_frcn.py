# PASCAL VOC 07+12: train on VOC2007 trainval + VOC2012 trainval, test on VOC2007 test (11-point mAP).
# Same pipeline as voc07_frcn.py; data_root holds VOC2007/ and VOC2012/. No bbox_min_size filter.
_base_ = './voc07_frcn.py'
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        # VOCDataset adds a different `dataset_type` to each metainfo; ConcatDataset must ignore it
        ignore_keys=['dataset_type'],
        datasets=[
            dict(
                type={{_base_.dataset_type}},
                data_root={{_base_.data_root}},
                ann_file='VOC2007/ImageSets/Main/trainval.txt',
                data_prefix=dict(sub_data_root='VOC2007/'),
                filter_cfg=dict(filter_empty_gt=True),
                pipeline={{_base_.train_pipeline}},
                backend_args=None),
            dict(
                type={{_base_.dataset_type}},
                data_root={{_base_.data_root}},
                ann_file='VOC2012/ImageSets/Main/trainval.txt',
                data_prefix=dict(sub_data_root='VOC2012/'),
                filter_cfg=dict(filter_empty_gt=True),
                pipeline={{_base_.train_pipeline}},
                backend_args=None),
        ]))
