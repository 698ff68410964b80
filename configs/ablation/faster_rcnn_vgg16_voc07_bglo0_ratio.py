# Paper row: Table 1 "FRCN, bg_lo = 0" (rows 3-4; VGG16): FRCN with the bg_lo heuristic removed,
# the 1:3 ratio kept. bg IoU in [0, 0.5), RandomSampler 64/image 25% fg, N = 2, lr 0.001.
# Paper: about the same mAP as FRCN for VGG16 (-2.4 for VGGM); number not quoted here.
_base_ = '../frcn/faster_rcnn_vgg16_voc07.py'
model = dict(train_cfg=dict(rcnn=dict(assigner=dict(neg_iou_thr=(0.0, 0.5)))))
