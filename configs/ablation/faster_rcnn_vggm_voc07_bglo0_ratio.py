# Paper row: Table 1 "FRCN, bg_lo = 0" (rows 3-4), VGGM: the bg_lo heuristic removed, the 1:3 ratio kept
# (bg IoU in [0, 0.5), RandomSampler 64/img 25% fg), N = 2, lr 0.001. Paper: -2.4 mAP vs FRCN on VGGM.
_base_ = '../frcn/faster_rcnn_vggm_voc07.py'
model = dict(train_cfg=dict(rcnn=dict(assigner=dict(neg_iou_thr=(0.0, 0.5)))))
