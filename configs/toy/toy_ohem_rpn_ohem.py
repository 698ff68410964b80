# CPU toy version of rpn_ohem/faster_rcnn_vgg16_ohem_rpn_ohem_voc07.py: OHEM in both stages (RPN: 256
# hardest anchors/image; R-CNN: bg_lo 0, no ratio, 64 hardest RoIs/image; loss-NMS 0.7 in both, N 2).
# That config is ohem/faster_rcnn_vgg16_ohem_voc07.py plus the RPN sampler of _base_/rpn_ohem.py, so this
# one is its toy version (./toy_ohem.py: the CPU needs of ./_cpu_overrides.py) plus the same sampler.
# Run by the sweep preset rpn_ohem (tools/sweep.py --preset rpn_ohem).
_base_ = ['./toy_ohem.py', '../_base_/rpn_ohem.py']
model = dict(train_cfg=dict(rpn=dict(sampler={{_base_.rpn_ohem_sampler}})))
