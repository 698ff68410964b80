"""Test-side names for the shared detector helpers in :mod:`ohem_experiments.quick_detectors`."""
from ohem_experiments.quick_detectors import (CASCADE_FPN, DOUBLE_HEAD, FASTER_C4, FASTER_FPN, MASK_FPN,  # noqa: F401
                                    mmdet_config, train_step)
from ohem_experiments.quick_detectors import build_detector as build  # noqa: F401
from ohem_experiments.quick_detectors import synthetic_batch as batch  # noqa: F401


def sampler_inputs(model, data):
    """Each image's ``(proposals, gt_instances, feats)`` as ``StandardRoIHead.loss`` hands them to the
    sampler: RPN proposals as ``priors``, and the per-image views ``[lvl[i][None] for lvl in x]`` of one
    batch forward (so images can be mined together)."""
    import torch
    x = model.extract_feat(data['inputs'])
    with torch.no_grad():
        results = model.rpn_head.predict(x, data['data_samples'], rescale=False)
    images = []
    for img, res in enumerate(results):
        res.priors = res.pop('bboxes')
        images.append((res, data['data_samples'][img].gt_instances, [lvl[img][None].detach() for lvl in x]))
    return x, images
