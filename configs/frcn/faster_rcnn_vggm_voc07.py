# Paper row: Table 1 "FRCN" (rows 1-2), VGGM (VGG_CNN_M_1024): bg_lo = 0.1, 1:3 fg:bg ratio
# (RandomSampler 64/img, 25% fg), B = 128 over N = 2 images, lr 0.001, 40k iterations, VOC07 trainval -> test.
# frcn/faster_rcnn_vgg16_voc07.py with the network swapped (_base_/models/vggm.py); needs the converted
# ImageNet VGGM file (docs/experiments.md).
_base_ = ['../frcn/faster_rcnn_vgg16_voc07.py', '../_base_/models/vggm.py']
model = {{_base_.vggm_model}}
