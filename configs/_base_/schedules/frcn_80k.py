# The authors' solver for VOC07+12: as frcn_40k.py (lr 0.001, x0.1 every 30k), 80k iterations.
_base_ = './frcn_40k.py'
max_iters = 80000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[30000, 60000], gamma=0.1)
]
