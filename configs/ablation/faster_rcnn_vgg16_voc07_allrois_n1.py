# Paper row: Table 1 "All RoIs" (B = 2048, N = 1; VGG16): every RoI of one image per iteration (up to
# 2048, UniformSampler), bg_lo = 0, no ratio, lr 0.003.
_base_ = './faster_rcnn_vgg16_voc07_allrois_n2.py'
train_dataloader = dict(batch_size=1)
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(num=2048))))
auto_scale_lr = dict(base_batch_size=1)
