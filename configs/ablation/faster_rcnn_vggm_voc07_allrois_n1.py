# Paper row: Table 1 "All RoIs" (B = 2048, N = 1), VGGM: every RoI of one image (UniformSampler up to
# 2048/img), bg_lo = 0, no ratio, lr 0.004.
_base_ = './faster_rcnn_vggm_voc07_allrois_n2.py'
train_dataloader = dict(batch_size=1)
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(num=2048))))
auto_scale_lr = dict(base_batch_size=1)
