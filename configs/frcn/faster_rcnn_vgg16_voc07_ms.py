# Paper row: "FRCN + M" (VOC07 test, VGG16): FRCN trained and tested multi-scale - shorter side per image
# from {480, 576, 688, 864, 1200}, longer side <= 2000; test at the same five scales merged by mmdet's
# DetTTAModel (NMS 0.3). Test with `tools/test.py CONFIG CKPT --tta` (without --tta: single scale 600).
# Everything else as faster_rcnn_vgg16_voc07.py.
_base_ = ['./faster_rcnn_vgg16_voc07.py', '../_base_/multiscale_frcn.py']
train_dataloader = dict(dataset=dict(pipeline={{_base_.ms_train_pipeline}}))
