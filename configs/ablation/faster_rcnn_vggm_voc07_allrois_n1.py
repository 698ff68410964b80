# Paper row: Table 1 "All RoIs" (B = 2048, N = 1), VGGM: every RoI of one image (UniformSampler up to 2048/img),
# bg_lo = 0, no ratio, lr 0.004 (the paper's VGGM value; VGG16: 0.003). The VGG16 file of the same name
# with the network swapped (_base_/models/vggm.py).
_base_ = ['../ablation/faster_rcnn_vgg16_voc07_allrois_n1.py', '../_base_/models/vggm.py']
model = {{_base_.vggm_model}}
optim_wrapper = dict(optimizer=dict(lr=0.004))
