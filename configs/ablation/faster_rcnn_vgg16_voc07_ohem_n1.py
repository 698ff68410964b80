# Paper row: Table 1 "OHEM, N = 1" (VGG16): OHEM mining the B = 128 hardest RoIs from one image per
# iteration (1 image/GPU, OHEMSampler 128/image), bg_lo = 0, no ratio, loss-NMS 0.7, lr 0.001.
# Paper: only ~0.2 mAP below OHEM with N = 2 (ohem/faster_rcnn_vgg16_ohem_voc07.py).
_base_ = '../ohem/faster_rcnn_vgg16_ohem_voc07.py'
train_dataloader = dict(batch_size=1)
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(num=128))))
auto_scale_lr = dict(base_batch_size=1)
