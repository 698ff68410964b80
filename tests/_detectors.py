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


def mined_selections(model, data) -> list:
    """Runs ``model.loss`` once and records, per image, the inputs and result of the sampler's selection
    (moved to the CPU): the images of a batch are mined together (``select_hard_examples_batch``, the
    default, on ``(B, n)`` rows: ``select_hard_examples_padded``) or one at a time (``select_hard_examples``: ``batch_images=False`` and heads mined per image)."""
    import inspect

    import torch

    import mmdet_ohem.samplers.ohem_sampler as sampler_mod
    orig_one, orig_padded = sampler_mod.select_hard_examples, sampler_mod.select_hard_examples_padded
    calls = []

    def cpu(v):
        return v.cpu() if torch.is_tensor(v) else v

    def one(losses, boxes, *args, **kwargs):
        sel = orig_one(losses, boxes, *args, **kwargs)
        calls.append((losses.cpu(), boxes.cpu(), tuple(map(cpu, args)),
                      {k: cpu(v) for k, v in kwargs.items()}, sel.indices.cpu(), losses.device))
        return sel

    def padded(*args, **kwargs):
        sels = orig_padded(*args, **kwargs)
        bound = inspect.signature(orig_padded).bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        for b, sel in enumerate(sels):  # (B, n) rows: row b is image b's select_hard_examples call
            one_image = {k: None if v is None else v[b].cpu() for k, v in a.items()
                         if k in ('labels', 'is_pos', 'valid')}
            calls.append((a['losses'][b].cpu(), a['boxes'][b].cpu(), (a['num'], a['iou_threshold']),
                          dict(one_image, nonfinite=a['nonfinite'], nonfinite_skip_limit=a['nonfinite_skip_limit']),
                          sel.indices.cpu(), a['losses'].device))
        return sels

    orig_front = sampler_mod.select_hard_examples_front

    def front(*args, **kwargs):  # the losses computed inside the graph: recorded from an eager evaluation
        sels = orig_front(*args, **kwargs)
        bound = inspect.signature(orig_front).bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        rows, losses = a['rows'], a['rows'].losses()
        for b, sel in enumerate(sels):
            one_image = {'labels': rows.inputs['labels'][b].cpu() if a['per_class'] else None,
                         'is_pos': rows.inputs['is_pos'][b].cpu() if a['with_pos'] else None,
                         'valid': a['valid'][b].cpu() if a['valid'] is not None else None}
            calls.append((losses[b].cpu(), rows.inputs['boxes'][b].float().cpu(), (a['num'], a['iou_threshold']),
                          dict(one_image, nonfinite=a['nonfinite'], nonfinite_skip_limit=a['nonfinite_skip_limit']),
                          sel.indices.cpu(), losses.device))
        return sels

    sampler_mod.select_hard_examples, sampler_mod.select_hard_examples_padded = one, padded
    sampler_mod.select_hard_examples_front = front
    try:
        with torch.no_grad():
            model.loss(data['inputs'], data['data_samples'])
    finally:
        sampler_mod.select_hard_examples, sampler_mod.select_hard_examples_padded = orig_one, orig_padded
        sampler_mod.select_hard_examples_front = orig_front
    return calls


def train_three_steps(name: str, sampler: dict):
    """mmdet config ``name`` with the sampler settings ``sampler`` (200 RPN proposals), three SGD steps on a
    fixed 2-image batch from seed 0: ``(model, [log vars per step])``."""
    import torch
    model = build(mmdet_config(name, sampler=sampler, rpn_max_per_img=200))
    data = batch(model, num_items=(4, 3), size=96)
    optim = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, [train_step(model, data, optim) for _ in range(3)]
