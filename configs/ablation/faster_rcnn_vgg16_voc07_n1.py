# Paper row: Table 1 "FRCN, N = 1" (VGG16): the baseline's B = 128 RoIs taken from a single image per
# iteration (1 image/GPU, RandomSampler 128/image with the 1:3 ratio, bg_lo 0.1), lr 0.001, 40k iterations.
# The N = 2 row is frcn/faster_rcnn_vgg16_voc07.py.
_base_ = '../frcn/faster_rcnn_vgg16_voc07.py'
train_dataloader = dict(batch_size=1)
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(num=128))))
auto_scale_lr = dict(base_batch_size=1)
