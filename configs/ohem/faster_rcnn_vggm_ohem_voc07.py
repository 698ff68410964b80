# Paper row: Table 1 "OHEM" (N = 2), VGGM: bg_lo = 0, no fg:bg ratio, per image the 64 hardest RoIs
# (cls + box loss) after loss-NMS 0.7, B = 128 over N = 2 images, lr 0.001, 40k iterations.
# Paper: +2.4 mAP over FRCN (bg_lo 0.1) and +4.8 over FRCN without the heuristic, on VGGM.
# ohem/faster_rcnn_vgg16_ohem_voc07.py with the network swapped (_base_/models/vggm.py).
_base_ = ['../ohem/faster_rcnn_vgg16_ohem_voc07.py', '../_base_/models/vggm.py']
model = {{_base_.vggm_model}}
