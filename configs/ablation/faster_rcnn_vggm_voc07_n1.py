# Paper row: Table 1 "FRCN, N = 1", VGGM: B = 128 RoIs from one image per iteration (RandomSampler 128/img,
# 1:3, bg_lo 0.1), lr 0.001.
_base_ = '../frcn/faster_rcnn_vggm_voc07.py'
train_dataloader = dict(batch_size=1)
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(num=128))))
auto_scale_lr = dict(base_batch_size=1)
