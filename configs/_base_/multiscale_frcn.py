# "M" of the OHEM paper (as in Fast R-CNN / SPPnet): multi-scale training and testing. Parts only, used by
# the *_ms configs as {{_base_.ms_train_pipeline}}; tta_model / tta_pipeline / test_with_tta are inherited
# as they are.
# * Training: the shorter side of each image is drawn from the five scales below (mmdet's
#   RandomChoiceResize picks one per image), the longer side is capped at 2000.
# * Testing: mmdet's TestTimeAug runs the detector at each of the five scales and DetTTAModel merges the
#   detections with per-class NMS at IoU 0.3 (the test NMS of these configs). This is how mmdet does
#   multi-scale testing; the paper's Fast R-CNN pyramid instead pooled each RoI at the one scale where it
#   is closest to 224 x 224 pixels. mmdet only uses tta_* with `tools/test.py --tta`; the experiment
#   tooling (tools/ohem_experiments/runs.py) uses it whenever `test_with_tta = True`.
ms_scales = (480, 576, 688, 864, 1200)
ms_max_size = 2000
ms_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize',
         scales=[(2000, 480), (2000, 576), (2000, 688), (2000, 864), (2000, 1200)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
tta_model = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.3), max_per_img=100))
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(2000, 480), keep_ratio=True),
             dict(type='Resize', scale=(2000, 576), keep_ratio=True),
             dict(type='Resize', scale=(2000, 688), keep_ratio=True),
             dict(type='Resize', scale=(2000, 864), keep_ratio=True),
             dict(type='Resize', scale=(2000, 1200), keep_ratio=True)],
            [dict(type='RandomFlip', prob=0.)],
            [dict(type='LoadAnnotations', with_bbox=True)],
            [dict(type='PackDetInputs',
                  meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                             'flip_direction'))]])
]
test_with_tta = True
