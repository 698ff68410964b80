# Ablation (isolates the ratio heuristic), VGGM: bg_lo = 0.1 kept, no 1:3 ratio (UniformSampler 64/img), N = 2.
# The VGG16 file of the same name with the network swapped (_base_/models/vggm.py).
_base_ = ['../ablation/faster_rcnn_vgg16_voc07_bglo01_noratio.py', '../_base_/models/vggm.py']
model = {{_base_.vggm_model}}
