# Paper row: FRCN without both heuristics, VGGM: bg_lo = 0 and no ratio (UniformSampler 64/img), N = 2,
# lr 0.001 - the candidate pool of OHEM sampled at random. Paper: OHEM is +4.8 mAP over it on VGGM.
# The VGG16 file of the same name with the network swapped (_base_/models/vggm.py).
_base_ = ['../ablation/faster_rcnn_vgg16_voc07_bglo0_noratio.py', '../_base_/models/vggm.py']
model = {{_base_.vggm_model}}
