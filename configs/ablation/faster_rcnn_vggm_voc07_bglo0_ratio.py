# Paper row: Table 1 "FRCN, bg_lo = 0" (rows 3-4), VGGM: the bg_lo heuristic removed, the 1:3 ratio kept
# (bg IoU in [0, 0.5), RandomSampler 64/img 25% fg), N = 2, lr 0.001. Paper: -2.4 mAP vs FRCN on VGGM.
# The VGG16 file of the same name with the network swapped (_base_/models/vggm.py).
_base_ = ['../ablation/faster_rcnn_vgg16_voc07_bglo0_ratio.py', '../_base_/models/vggm.py']
model = {{_base_.vggm_model}}
