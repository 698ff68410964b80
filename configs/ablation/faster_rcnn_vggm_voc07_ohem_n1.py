# Paper row: Table 1 "OHEM, N = 1", VGGM: the 128 hardest RoIs of one image per iteration (OHEMSampler
# 128/img), bg_lo = 0, no ratio, loss-NMS 0.7, lr 0.001. The VGG16 file of the same name, network swapped.
_base_ = ['../ablation/faster_rcnn_vgg16_voc07_ohem_n1.py', '../_base_/models/vggm.py']
model = {{_base_.vggm_model}}
