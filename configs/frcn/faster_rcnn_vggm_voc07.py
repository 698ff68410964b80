# Paper row: Table 1 "FRCN" (rows 1-2), VGGM (VGG_CNN_M_1024): bg_lo = 0.1, 1:3 fg:bg ratio
# (RandomSampler 64/img, 25% fg), B = 128 over N = 2 images, lr 0.001, 40k iterations, VOC07 trainval ->
# test. Same method settings as faster_rcnn_vgg16_voc07.py; only the network differs.
# Needs the converted ImageNet VGGM file (see _base_/models/faster_rcnn_vggm.py and docs/experiments.md).
_base_ = [
    '../_base_/models/faster_rcnn_vggm.py', '../_base_/datasets/voc07_frcn.py',
    '../_base_/schedules/frcn_40k.py', '../_base_/default_runtime_iter.py'
]
