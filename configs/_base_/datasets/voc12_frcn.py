# PASCAL VOC 2012 with a local evaluation: train on VOC2012 train, evaluate on VOC2012 val with the
# area-under-curve AP of VOC2012. The paper's "VOC12" rows train on VOC2012 trainval and are scored by
# the evaluation server on VOC2012 test: for that, set
#   train_dataloader.dataset.ann_file=VOC2012/ImageSets/Main/trainval.txt
# and submit test results (format-only); the local val number is NOT comparable to the paper's.
_base_ = './voc07_frcn.py'
train_dataloader = dict(
    dataset=dict(ann_file='VOC2012/ImageSets/Main/train.txt', data_prefix=dict(sub_data_root='VOC2012/')))
val_dataloader = dict(
    dataset=dict(ann_file='VOC2012/ImageSets/Main/val.txt', data_prefix=dict(sub_data_root='VOC2012/')))
test_dataloader = val_dataloader
val_evaluator = dict(type='VOCMetric', metric='mAP', eval_mode='area')
test_evaluator = val_evaluator
