# Not a paper row: mmdet's own Faster R-CNN R50-FPN 1x on COCO (RandomSampler 512/image, 25% fg,
# bg IoU in [0, 0.5)), unchanged - the baseline for ohem/faster_rcnn_r50_fpn_ohem_coco.py.
# mmdet's PR #163 reported 36.4 box AP for it (and 36.6 with mmdet's own OHEM).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_ohem'], allow_failed_imports=False)
