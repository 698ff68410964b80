# CPU toy version of rpn_ohem/faster_rcnn_vgg16_rpn_ohem_voc07.py: OHEM in the RPN only (256 hardest
# anchors/image, loss-NMS 0.7, no ratio); the R-CNN stage keeps the FRCN heuristics (bg_lo 0.1, 1:3 fg:bg,
# RandomSampler 64 RoIs/image, N 2). That config is frcn/faster_rcnn_vgg16_voc07.py plus the RPN sampler of
# _base_/rpn_ohem.py, so this one is its toy version (./toy_frcn.py: the CPU needs of ./_cpu_overrides.py)
# plus the same sampler. Run by the sweep preset rpn_ohem (tools/sweep.py --preset rpn_ohem).
_base_ = ['./toy_frcn.py', '../_base_/rpn_ohem.py']
model = dict(train_cfg=dict(rpn=dict(sampler={{_base_.rpn_ohem_sampler}})))
