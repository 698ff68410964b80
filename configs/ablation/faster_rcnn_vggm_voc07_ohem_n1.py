# Paper row: Table 1 "OHEM, N = 1", VGGM: the 128 hardest RoIs of one image per iteration (OHEMSampler
# 128/img), bg_lo = 0, no ratio, loss-NMS 0.7, lr 0.001.
_base_ = '../ohem/faster_rcnn_vggm_ohem_voc07.py'
train_dataloader = dict(batch_size=1)
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(num=128))))
auto_scale_lr = dict(base_batch_size=1)
