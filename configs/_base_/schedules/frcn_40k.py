# The authors' solver (py-faster-rcnn / OHEM Caffe code) for VOC2007: SGD, base lr 0.001, momentum 0.9,
# weight decay 0.0005, lr x0.1 every 30k iterations, 40k iterations of N = 2 images (set by the dataset's
# batch_size; the authors used iter_size 2 x 1 image). Biases: lr x2, no weight decay (Caffe prototxt).
max_iters = 40000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[30000], gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0005),
    paramwise_cfg=dict(bias_lr_mult=2.0, bias_decay_mult=0.0))
# lr 0.001 was set for 2 images per iteration on one GPU: `--auto-scale-lr` rescales for other totals.
auto_scale_lr = dict(enable=False, base_batch_size=2)
