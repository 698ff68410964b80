# Ablation (isolates the ratio heuristic), VGGM: bg_lo = 0.1 kept, no 1:3 ratio (UniformSampler 64/img), N = 2.
_base_ = '../frcn/faster_rcnn_vggm_voc07.py'
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(_delete_=True, type='UniformSampler', num=64))))
