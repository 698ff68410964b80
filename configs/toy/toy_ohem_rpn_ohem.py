# CPU toy version of rpn_ohem/faster_rcnn_vgg16_ohem_rpn_ohem_voc07.py: OHEM in both stages (RPN: 256
# hardest anchors/image; R-CNN: bg_lo 0, no ratio,
# 64 hardest RoIs/image; loss-NMS 0.7 in both, N 2).
# Same method settings as that config; only the CPU needs of ./_cpu_overrides.py change (narrow VGG16,
# 160 px toy-VOC images, small anchors, RoIAlign, 1200-iteration from-scratch schedule). Run by
# the sweep preset rpn_ohem (tools/sweep.py --preset rpn_ohem).
_base_ = ['../rpn_ohem/faster_rcnn_vgg16_ohem_rpn_ohem_voc07.py', './_cpu_overrides.py']
model = {{_base_.cpu_model}}
train_dataloader = {{_base_.cpu_train_dataloader}}
val_dataloader = {{_base_.cpu_test_dataloader}}
test_dataloader = {{_base_.cpu_test_dataloader}}
train_cfg = {{_base_.cpu_train_cfg}}
param_scheduler = {{_base_.cpu_param_scheduler}}
optim_wrapper = {{_base_.cpu_optim_wrapper}}
default_hooks = {{_base_.cpu_default_hooks}}
