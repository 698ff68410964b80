# COCO schedule for the VGG16 pair: lr 0.001 for 240k iterations then 0.0001 for 160k (400k in all,
# 2 images per iteration). These counts are our reading of the paper's COCO section, not checked against
# the authors' code (the project's paper notes do not list them).
_base_ = './frcn_40k.py'
max_iters = 400000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[240000], gamma=0.1)
]
