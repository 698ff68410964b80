# Paper row: Table 1 "FRCN, N = 1", VGGM: B = 128 RoIs from one image per iteration (RandomSampler 128/img,
# 1:3, bg_lo 0.1), lr 0.001. The VGG16 file of the same name with the network swapped (_base_/models/vggm.py).
_base_ = ['../ablation/faster_rcnn_vgg16_voc07_n1.py', '../_base_/models/vggm.py']
model = {{_base_.vggm_model}}
