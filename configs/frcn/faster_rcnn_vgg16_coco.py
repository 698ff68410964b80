# Paper row: the COCO test-dev table, "FRCN" on MS COCO (VGG16; paper: trained on COCO 2014
# trainval, test-dev AP 19.7, AP50 35.9). This config trains on train2017 and evaluates on val2017 (box AP).
# FRCN heuristics (bg_lo 0.1, 1:3 ratio), B = 128 over N = 2, lr 0.001, schedule in frcn_coco.py.
_base_ = [
    '../_base_/models/faster_rcnn_vgg16.py', '../_base_/datasets/coco_frcn.py',
    '../_base_/schedules/frcn_coco.py', '../_base_/default_runtime_iter.py'
]
model = dict(roi_head=dict(bbox_head=dict(num_classes=80)))
