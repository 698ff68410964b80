"""Test-side names for the shared detector helpers in :mod:`ohem_experiments.quick_detectors`."""
import contextlib

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
    (moved to the CPU): the images of a batch are mined together (the default: ``select_hard_examples_padded``
    on ``(B, n)`` rows, or ``select_hard_examples_front`` with ``cuda_graph=True``, whose losses are recorded
    from an eager evaluation) or one at a time (``select_hard_examples``: ``batch_images=False`` and heads
    mined per image)."""
    import inspect

    import torch

    import mmdet_ohem.samplers.ohem_sampler as sampler_mod
    names = ('select_hard_examples', 'select_hard_examples_padded', 'select_hard_examples_front')
    origs = {name: getattr(sampler_mod, name) for name in names}
    calls = []

    def cpu(v):
        return v.cpu() if torch.is_tensor(v) else v

    def one(losses, boxes, *args, **kwargs):
        sel = origs['select_hard_examples'](losses, boxes, *args, **kwargs)
        calls.append((losses.cpu(), boxes.cpu(), tuple(map(cpu, args)),
                      {k: cpu(v) for k, v in kwargs.items()}, sel.indices.cpu(), losses.device))
        return sel

    def per_row(name, rows_of):
        """A spy on the (B, n) function ``name``: row b of its rows is image b's select_hard_examples call;
        ``rows_of(arguments)`` gives ``(losses, boxes, labels, is_pos, valid)``, each ``(B, n, ...)`` or None."""
        def spy(*args, **kwargs):
            sels = origs[name](*args, **kwargs)
            bound = inspect.signature(origs[name]).bind(*args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            losses, boxes, labels, is_pos, valid = rows_of(a)
            for b, sel in enumerate(sels):
                one_image = {k: None if v is None else v[b].cpu()
                             for k, v in (('labels', labels), ('is_pos', is_pos), ('valid', valid))}
                calls.append((losses[b].cpu(), boxes[b].float().cpu(), (a['num'], a['iou_threshold']),
                              dict(one_image, nonfinite=a['nonfinite'], nonfinite_skip_limit=a['nonfinite_skip_limit']),
                              sel.indices.cpu(), losses.device))
            return sels
        return spy

    def front_rows(a):
        rows = a['rows']
        return (rows.losses(), rows.inputs['boxes'], rows.inputs['labels'] if a['per_class'] else None,
                rows.inputs['is_pos'] if a['with_pos'] else None, a['valid'])

    spies = {'select_hard_examples': one,
             'select_hard_examples_padded': per_row('select_hard_examples_padded', lambda a: (
                 a['losses'], a['boxes'], a['labels'], a['is_pos'], a['valid'])),
             'select_hard_examples_front': per_row('select_hard_examples_front', front_rows)}
    for name, spy in spies.items():
        setattr(sampler_mod, name, spy)
    try:
        with torch.no_grad():
            model.loss(data['inputs'], data['data_samples'])
    finally:
        for name, orig in origs.items():
            setattr(sampler_mod, name, orig)
    return calls


def train_three_steps(name: str, sampler: dict):
    """mmdet config ``name`` with the sampler settings ``sampler`` (200 RPN proposals), three SGD steps on a
    fixed 2-image batch from seed 0: ``(model, [log vars per step])``."""
    import torch
    model = build(mmdet_config(name, sampler=sampler, rpn_max_per_img=200))
    data = batch(model, num_items=(4, 3), size=96)
    optim = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, [train_step(model, data, optim) for _ in range(3)]


@contextlib.contextmanager
def linear_calls_by_pass(head, device_type: str):
    """Inside the block, every ``nn.Linear`` of ``head`` records ``(input dtype, autocast enabled on
    device_type, TF32 matmuls allowed, output dtype)`` into the yielded ``{'readonly': set, 'training': set}``,
    under 'readonly' while ``RoIHeadAdapter._readonly_outputs`` (the batched read-only forward) runs."""
    import torch

    from mmdet_ohem.readonly_pass import RoIHeadAdapter
    seen = {'readonly': set(), 'training': set()}
    inside = []
    orig = RoIHeadAdapter._readonly_outputs

    def spy_outputs(self, *args, **kwargs):
        inside.append(True)
        try:
            return orig(self, *args, **kwargs)
        finally:
            inside.pop()

    def record(module, inputs, output):
        seen['readonly' if inside else 'training'].add((inputs[0].dtype, torch.is_autocast_enabled(device_type),
                                                        torch.backends.cuda.matmul.allow_tf32, output.dtype))

    hooks = [m.register_forward_hook(record) for m in head.modules() if isinstance(m, torch.nn.Linear)]
    RoIHeadAdapter._readonly_outputs = spy_outputs
    try:
        yield seen
    finally:
        RoIHeadAdapter._readonly_outputs = orig
        for h in hooks:
            h.remove()


def mmlogger_records(fn) -> list:
    """Runs ``fn()`` with a handler on mmengine's current ``MMLogger`` (it does not propagate to the root
    logger, so pytest's ``caplog`` misses it): the ``logging.LogRecord`` s it logged."""
    import logging

    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        fn()
    finally:
        logger.removeHandler(handler)
    return records
