# Ablation (isolates the ratio heuristic; not a separate paper row): FRCN with bg_lo = 0.1 kept and the
# 1:3 fg:bg ratio removed: 64 RoIs/image drawn uniformly from all fg and bg candidates (UniformSampler),
# N = 2, lr 0.001.
_base_ = '../frcn/faster_rcnn_vgg16_voc07.py'
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(_delete_=True, type='UniformSampler', num=64))))
