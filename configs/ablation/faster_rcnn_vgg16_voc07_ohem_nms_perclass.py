# Ablation: OHEM as in the authors' Caffe code - loss-NMS 0.7 applied per target class label instead of
# class-agnostically (the paper's text). Otherwise ohem/faster_rcnn_vgg16_ohem_voc07.py. Not a paper row.
_base_ = '../ohem/faster_rcnn_vgg16_ohem_voc07.py'
model = dict(train_cfg=dict(rcnn=dict(sampler=dict(nms=dict(per_class=True)))))
