"""The selection as a captured CUDA graph (``mmdet_ohem.selection.graph``), everything but the capture.

On the CPU a ``CapturedSelection`` runs the rule eagerly on its static buffers in place of a replay, so the
buffers, the copies, the padding and the fallbacks are checked here; the capture itself is checked by the
``cuda`` tests (tests/test_cuda.py).
"""
import math

import pytest
import torch

from mmdet_ohem.selection import SelectionGraphs, select_hard_examples, select_hard_examples_padded
from mmdet_ohem.selection import graph as graph_mod

from ._detectors import FASTER_FPN, batch, build, mmdet_config, train_three_steps


def _problem(seed: int, count: int, n: int, nan: bool = False):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, n, 2, generator=g) * 300
    wh = torch.rand(count, n, 2, generator=g) * 80 + 4
    boxes = torch.cat([xy, xy + wh], dim=-1)
    boxes[:, n // 2:n // 2 + 40] = boxes[:, :40] + torch.rand(count, 40, 4, generator=g)  # near-duplicates
    losses = torch.rand(count, n, generator=g) * 3
    losses[:, ::7] = losses[:, 3:4]  # exact ties
    if nan:
        losses[0, 5], losses[-1, 9] = math.nan, math.inf
    valid = torch.rand(count, n, generator=g) > 0.15
    is_pos = torch.rand(count, n, generator=g) < 0.2
    labels = torch.randint(0, 5, (count, n), generator=g)
    return losses, boxes, valid, is_pos, labels


def _same(got, want):
    assert got.indices.tolist() == want.indices.tolist()
    assert got.num_pos == want.num_pos
    assert int(got.num_suppressed) == int(want.num_suppressed)
    assert int(got.num_nonfinite) == int(want.num_nonfinite)
    assert got.num_candidates == want.num_candidates


@pytest.mark.parametrize('per_class', [False, True])
def test_graph_buffers_give_the_eager_rule_whatever_the_padding_holds(per_class):
    """Calls of decreasing width reuse one graph's buffers, so columns past ``n`` hold the previous call's
    rows (and garbage put there on purpose): the selection is still that of each image alone."""
    graphs = SelectionGraphs(capture=False)
    for call, n in enumerate((250, 237, 129)):  # one bucket (256): each call leaves stale columns
        losses, boxes, valid, is_pos, labels = _problem(call, 2, n, nan=call == 1)
        if call:
            sel = next(iter(graphs._cache.values()))
            buf = sel.buffers
            buf['values'][:, n:] = math.nan
            buf['boxes'][:, n:] = torch.tensor([0.0, 0.0, 1e6, 1e6])  # covers everything
            buf['is_pos'][:, n:] = True
            if 'labels' in buf:
                buf['labels'][:, n:] = 0
        lab = labels if per_class else None
        got = select_hard_examples_padded(losses, boxes, 64, 0.7, lab, 'skip', is_pos, method='device',
                                          valid=valid, graphs=graphs)
        eager = select_hard_examples_padded(losses, boxes, 64, 0.7, lab, 'skip', is_pos, method='device',
                                            valid=valid)
        for b in range(2):
            _same(got[b], eager[b])
            host = select_hard_examples(losses[b], boxes[b], 64, 0.7, lab[b] if per_class else None, 'skip',
                                        is_pos[b], method='host', valid=valid[b])
            _same(got[b], host)
            assert got[b].mined_loss == pytest.approx(eager[b].mined_loss)
            assert got[b].candidate_loss == pytest.approx(eager[b].candidate_loss)
    assert len(graphs._cache) == 1 and graphs.replays == 3 and graphs.fallbacks == 0
    assert graphs.captures == 0  # on the CPU: the buffers only


def test_loading_rows_copies_with_one_operator_once_a_width_is_known():
    """``CapturedSelection.load``: the buffers' columns for a width are made once (training's widths repeat), so
    a call dispatches one ``_foreach_copy_`` of every input and ``valid``, and one ``fill_`` of the padding;
    what lands in the buffers is the inputs, the padding never valid. A width wider than the graph is named."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    graphs = SelectionGraphs(capture=False)
    losses, boxes, valid, is_pos, _ = _problem(0, 2, 100)
    select_hard_examples_padded(losses, boxes, 16, 0.7, None, 'skip', is_pos, method='device', valid=valid,
                                graphs=graphs)
    sel = next(iter(graphs._cache.values()))
    inputs = {'values': losses.flip(1), 'boxes': boxes.flip(1), 'is_pos': is_pos.flip(1)}
    assert sorted(inputs) == sorted(sel.buffers)
    flipped = valid.flip(1)
    with Ops() as ops:
        sel.load(inputs, flipped)
    assert ops.names == ['_foreach_copy_', 'fill_']
    for name, t in inputs.items():
        assert torch.equal(sel.buffers[name][:, :100], t)
    assert torch.equal(sel.valid[:, :100], flipped) and not sel.valid[:, 100:].any()
    sel.load(inputs, None)
    assert sel.valid[:, :100].all() and not sel.valid[:, 100:].any()
    with pytest.raises(ValueError, match='130 rows for a graph of 128'):
        sel.load({k: torch.cat([t, t[:, :30]], 1) for k, t in inputs.items()}, None)


def test_graph_result_is_the_callers_tensor_not_a_buffer():
    graphs = SelectionGraphs(capture=False)
    losses, boxes, valid, is_pos, _ = _problem(0, 2, 100)
    first = select_hard_examples_padded(losses, boxes, 16, 0.7, None, 'skip', is_pos, method='device', valid=valid,
                                        graphs=graphs)
    kept = [s.indices.clone() for s in first]
    losses2, boxes2, valid2, is_pos2, _ = _problem(1, 2, 100)
    select_hard_examples_padded(losses2, boxes2, 16, 0.7, None, 'skip', is_pos2, method='device', valid=valid2,
                                graphs=graphs)
    assert [s.indices.tolist() for s in first] == [k.tolist() for k in kept]


def test_graphs_per_bucket_and_least_recently_used_dropped():
    graphs = SelectionGraphs(capture=False, max_graphs=2)
    for n in (100, 120, 300, 500, 110):
        losses, boxes, valid, is_pos, _ = _problem(n, 2, n)
        select_hard_examples_padded(losses, boxes, 8, 0.7, None, 'skip', is_pos, method='device', valid=valid,
                                    graphs=graphs)
    # 128 (100, 120), 384, 512 drops 128; 110 is served by 384, the narrowest kept, which becomes the latest
    assert [k.size for k in graphs._cache] == [512, 384]
    assert graphs.key({'boxes': torch.zeros(3, 1, 4)}, 8, 0.7, False, False, 0.5).size == graph_mod.BUCKET
    with pytest.raises(ValueError, match='max_graphs must be a positive int, got 0'):
        SelectionGraphs(max_graphs=0)


def test_rows_are_served_by_the_narrowest_graph_kept_that_is_wide_enough():
    """Training's candidate counts move across width buckets from batch to batch; a graph is made only for
    rows wider than every graph kept (one per bucket would recapture in turn), narrower rows run in the
    narrowest wide-enough graph, and the result is the eager rule's. Another budget is another graph."""
    graphs = SelectionGraphs(capture=False)
    for n, num, size in ((300, 16, 384), (100, 16, 384), (250, 16, 384), (500, 16, 512), (260, 16, 384),
                         (400, 16, 512), (100, 32, 128)):
        losses, boxes, valid, is_pos, _ = _problem(n, 2, n)
        got = select_hard_examples_padded(losses, boxes, num, 0.7, None, 'skip', is_pos, method='device',
                                          valid=valid, graphs=graphs)
        eager = select_hard_examples_padded(losses, boxes, num, 0.7, None, 'skip', is_pos, method='device',
                                            valid=valid)
        for b in range(2):
            _same(got[b], eager[b])
        assert next(reversed(graphs._cache)).size == size, (n, num)  # the graph that served it
    assert sorted((k.num, k.size) for k in graphs._cache) == [(16, 384), (16, 512), (32, 128)]
    assert graphs.replays == 7 and graphs.fallbacks == 0


def test_capture_warms_up_on_a_side_stream_then_captures_in_thread_local_mode(monkeypatch):
    """The capture's CUDA calls, recorded by stand-ins on the CPU: two warm-up runs on a side stream that
    waits for the current one, then one ``torch.cuda.graph`` region in ``'thread_local'`` capture mode (so
    that a pin-memory thread allocating during the capture does not break it), with arguments that the
    installed torch's ``torch.cuda.graph`` accepts; replays then run the graph and return its outputs."""
    import contextlib
    import inspect

    from mmdet_ohem.selection.graph import CapturedSelection, GraphKey
    calls = []
    real_graph_sig = inspect.signature(torch.cuda.graph.__init__)

    class Stream:
        def __init__(self, device=None):
            calls.append(('stream', str(device)))

        def wait_stream(self, other):
            calls.append(('wait', type(other).__name__))

    class Graph:
        def replay(self):
            calls.append(('replay', ))

    @contextlib.contextmanager
    def on_stream(stream):
        calls.append(('on side stream', ))
        yield

    @contextlib.contextmanager
    def graph(cuda_graph, *args, **kwargs):
        real_graph_sig.bind(None, cuda_graph, *args, **kwargs)  # the installed torch takes these arguments
        calls.append(('capture', kwargs.get('capture_error_mode')))
        yield
        calls.append(('captured', ))

    rules = []
    monkeypatch.setattr(torch.cuda, 'Stream', Stream)
    monkeypatch.setattr(torch.cuda, 'current_stream', lambda device=None: Stream(device))
    monkeypatch.setattr(torch.cuda, 'stream', on_stream)
    monkeypatch.setattr(torch.cuda, 'CUDAGraph', Graph)
    monkeypatch.setattr(torch.cuda, 'graph', graph)
    monkeypatch.setattr(CapturedSelection, '_rule', lambda self: rules.append(len(calls)) or ('chosen', 'counts'))
    inputs = (('values', (), torch.float32), ('boxes', (4, ), torch.float32))
    sel = CapturedSelection(GraphKey(2, 128, 8, 0.7, False, False, 0.5, 'cpu', inputs, None), capture=True,
                            front=None)
    assert [c[0] for c in calls] == ['stream', 'stream', 'wait', 'on side stream', 'stream', 'wait', 'capture',
                                     'captured']
    assert ('capture', 'thread_local') in calls and graph_mod.CAPTURE_ERROR_MODE == 'thread_local'
    assert len(rules) == graph_mod.WARMUP_RUNS + 1 and rules[-1] == calls.index(('capture', 'thread_local')) + 1
    assert sel.replay() == ('chosen', 'counts') and calls[-1] == ('replay', )


def test_copies_of_the_cache_keep_the_settings_not_the_graphs():
    """A deep copy of the model (mmengine's EMA makes one) or a pickle copies no graph or buffer."""
    import copy
    import pickle
    graphs = SelectionGraphs(capture=False, max_graphs=2)
    losses, boxes, valid, is_pos, _ = _problem(0, 2, 100)
    select_hard_examples_padded(losses, boxes, 8, 0.7, None, 'skip', is_pos, method='device', valid=valid,
                                graphs=graphs)
    for twin in (copy.deepcopy(graphs), pickle.loads(pickle.dumps(graphs))):
        assert not twin._cache and twin.max_graphs == 2 and twin.capture is False
        got = select_hard_examples_padded(losses, boxes, 8, 0.7, None, 'skip', is_pos, method='device', valid=valid,
                                          graphs=twin)
        assert len(twin._cache) == 1 and got[0].indices.numel() == 8
    assert len(graphs._cache) == 1


def test_blind_steps_that_do_not_converge_fall_back_to_the_eager_rule():
    """A chain of boxes each overlapping the next: greedy NMS keeps every other one, and deciding the last
    takes as many fixed-point steps as the chain is long, more than the graph's blind steps."""
    n = 40
    x = torch.arange(n, dtype=torch.float32) * 2.0
    boxes = torch.stack([x, torch.zeros(n), x + 20, torch.full((n, ), 10.0)], dim=1)[None]
    losses = torch.linspace(2, 1, n)[None]
    graphs = SelectionGraphs(capture=False)
    got = select_hard_examples_padded(losses, boxes, n, 0.8, method='device', graphs=graphs)[0]
    host = select_hard_examples(losses[0], boxes[0], n, 0.8, method='host')
    assert got.indices.tolist() == host.indices.tolist()
    assert graphs.fallbacks == 1


def test_wide_rows_and_no_loss_nms_run_eagerly():
    graphs = SelectionGraphs(capture=False)
    n = graph_mod.MAX_GRAPH_SIZE + 1
    losses = torch.rand(1, n)
    boxes = torch.tensor([0.0, 0.0, 10.0, 10.0]).repeat(1, n, 1) + torch.rand(1, n, 1) * 1000
    got = select_hard_examples_padded(losses, boxes, 8, 0.7, method='device', graphs=graphs)[0]
    assert got.indices.tolist() == select_hard_examples(losses[0], boxes[0], 8, 0.7, method='host').indices.tolist()
    select_hard_examples_padded(losses[:, :50], boxes[:, :50], 8, None, method='device', graphs=graphs)
    assert graphs.replays == 0 and not graphs._cache


def test_a_failed_capture_warns_once_and_the_selection_runs_eagerly():
    """Capturing on CPU tensors fails (no CUDA): the failure is reported and every call runs eagerly."""
    seen = []
    graphs = SelectionGraphs(capture=True, on_failure=seen.append)
    losses, boxes, valid, is_pos, _ = _problem(0, 2, 90)
    for _ in range(2):
        got = select_hard_examples_padded(losses, boxes, 16, 0.7, None, 'skip', is_pos, method='device',
                                          valid=valid, graphs=graphs)
        for b in range(2):
            _same(got[b], select_hard_examples(losses[b], boxes[b], 16, 0.7, None, 'skip', is_pos[b],
                                               method='host', valid=valid[b]))
    assert len(seen) == 1 and graphs.failed and not graphs._cache
    with pytest.warns(UserWarning, match='capturing the selection as a CUDA graph failed'):
        select_hard_examples_padded(losses, boxes, 16, 0.7, None, 'skip', is_pos, method='device', valid=valid,
                                    graphs=SelectionGraphs(capture=True))


def test_padded_rows_reject_bad_shapes_naming_them():
    with pytest.raises(ValueError, match=r'losses must be \(B, n\) and boxes \(B, n, 4\), got \(3,\)'):
        select_hard_examples_padded(torch.zeros(3), torch.zeros(3, 4), 4)
    with pytest.raises(ValueError, match=r'valid must have shape \(1, 3\), got \(1, 2\)'):
        select_hard_examples_padded(torch.zeros(1, 3), torch.zeros(1, 3, 4), 4, valid=torch.ones(1, 2, dtype=bool))
    assert select_hard_examples_padded(torch.zeros(0, 3), torch.zeros(0, 3, 4), 4) == []


@pytest.fixture
def gpu_selection_path(monkeypatch):
    """The selection takes its CUDA path (device rule, graphs) on the CPU tensors."""
    from mmdet_ohem.selection import select as select_mod
    orig = select_mod.resolve_method
    monkeypatch.setattr(select_mod, 'resolve_method',
                        lambda method, device, n: orig(method, torch.device('cuda'), n) if method == 'auto'
                        else orig(method, device, n))


def test_sampler_with_cuda_graph_trains_the_same_steps(gpu_selection_path):
    """The sampler on the selection's GPU path (forced on the CPU tensors): ``cuda_graph=True`` mines the
    same RoIs, so three training steps give the same losses; the graph's buffers were used."""
    logs = {}
    for graph in (False, True):
        model, logs[graph] = train_three_steps(FASTER_FPN, dict(num=48, cuda_graph=graph))
        graphs = model.roi_head.bbox_sampler._graphs
        assert (graphs is not None) == graph
        if graph:
            assert graphs.replays == 3 and graphs.captures == 0
    assert logs[True] == logs[False]


@pytest.mark.slow
@pytest.mark.parametrize('name', ['cascade', 'double_head'])
def test_graph_path_trains_multi_stage_and_other_heads_the_same_steps(gpu_selection_path, name):
    """On the selection's GPU path (forced on the CPU tensors), Cascade R-CNN (one sampler, and its graphs, per
    stage) and Double-Head R-CNN train three steps to the same losses with the graph as without; every
    stage's sampler replayed its graph."""
    from ._detectors import CASCADE_FPN, DOUBLE_HEAD
    config = {'cascade': CASCADE_FPN, 'double_head': DOUBLE_HEAD}[name]
    logs = {}
    for graph in (False, True):
        model, logs[graph] = train_three_steps(config, dict(num=48, cuda_graph=graph))
    samplers = model.roi_head.bbox_sampler
    samplers = samplers if isinstance(samplers, list) else [samplers]
    assert len(samplers) == (3 if name == 'cascade' else 1)
    assert all(s._graphs.replays == 3 and s._graphs.fallbacks == 0 for s in samplers)
    assert logs[True] == logs[False]


def test_default_cuda_graph_changes_nothing_on_the_cpu():
    """``cuda_graph=True`` is the default; on the CPU the selection runs on the host and the graphs are never
    used, so training is that of ``cuda_graph=False``."""
    model, default = train_three_steps(FASTER_FPN, dict(num=48))
    sampler = model.roi_head.bbox_sampler
    assert sampler.cuda_graph is True and sampler._graphs.replays == 0 and not sampler._graphs._cache
    assert default == train_three_steps(FASTER_FPN, dict(num=48, cuda_graph=False))[1]


def test_graph_path_mines_what_the_host_selection_mines_from_the_same_losses(gpu_selection_path):
    """With ``cuda_graph=True`` the targets and losses run in the graph with the selection; the losses
    they give, selected by the host reference image by image, give the same RoIs."""
    from ._detectors import mined_selections
    model = build(mmdet_config(FASTER_FPN, sampler=dict(num=48, cuda_graph=True), rpn_max_per_img=200))
    data = batch(model, num_items=(4, 3), size=96)
    calls = mined_selections(model, data)
    assert len(calls) == 2 and model.roi_head.bbox_sampler._graphs.replays == 1
    for losses, boxes, args, kwargs, indices, _ in calls:
        host = select_hard_examples(losses, boxes, *args, **{**kwargs, 'method': 'host'})
        assert host.indices.tolist() == indices.tolist()


DYNAMIC = 'dynamic_rcnn/dynamic-rcnn_r50_fpn_1x_coco.py'


def test_graph_key_follows_loss_settings_changed_in_training(gpu_selection_path):
    """Dynamic R-CNN's RoI head sets ``loss_bbox.beta`` (SmoothL1) every 100 iterations; a captured graph
    holds the beta it was captured with. The ranking front's key holds the loss modules' settings, so a new
    beta gets a graph of its own (here the CPU's eager stand-in), and the RoIs are the host selection's on
    losses computed with the new beta."""
    import copy

    from mmdet_ohem.readonly_pass import loss_settings

    from ._detectors import mined_selections
    model = build(mmdet_config(DYNAMIC, sampler=dict(num=48), rpn_max_per_img=200))
    data = batch(model, num_items=(4, 3), size=96)
    sampler, loss_bbox = model.roi_head.bbox_sampler, model.roi_head.bbox_head.loss_bbox
    assert type(loss_bbox).__name__ == 'SmoothL1Loss' and sampler.batched
    key = sampler.head.row_ranking(sampler.ranking_loss).key
    assert loss_settings(loss_bbox) in key and loss_settings(model.roi_head.bbox_head.loss_cls) in key
    mined_selections(model, copy.deepcopy(data))
    assert len(sampler._graphs._cache) == 1 and sampler._graphs.replays == 1
    assert sampler.head.row_ranking(sampler.ranking_loss).key == key  # unchanged settings: the same graph
    loss_bbox.beta = 0.02  # what DynamicRoIHead.update_hyperparameters does
    assert sampler.head.row_ranking(sampler.ranking_loss).key != key
    calls = mined_selections(model, copy.deepcopy(data))
    assert len(sampler._graphs._cache) == 2 and sampler._graphs.replays == 2
    assert len(calls) == 2
    for losses, boxes, args, kwargs, indices, _ in calls:
        host = select_hard_examples(losses, boxes, *args, **{**kwargs, 'method': 'host'})
        assert host.indices.tolist() == indices.tolist()


def test_loss_settings_are_the_modules_public_numbers():
    from mmdet.models.losses import CrossEntropyLoss, SmoothL1Loss

    from mmdet_ohem.readonly_pass import loss_settings
    assert loss_settings(SmoothL1Loss(beta=0.5, loss_weight=2.0)) == \
        ('SmoothL1Loss', ('beta', 0.5), ('loss_weight', 2.0), ('reduction', 'mean'))
    ce = loss_settings(CrossEntropyLoss(class_weight=[1.0, 2.0]))
    assert ce[0] == 'CrossEntropyLoss' and ('class_weight', (1.0, 2.0)) in ce and hash(ce) is not None
    assert loss_settings(None) == ()


def test_cuda_graph_setting_is_checked():
    model = build(mmdet_config(FASTER_FPN))
    from mmdet_ohem.samplers import OHEMSampler
    with pytest.raises(TypeError, match="cuda_graph must be True or False, got 'yes'"):
        OHEMSampler(num=8, context=model.roi_head, cuda_graph='yes')
    assert 'cuda_graph=True' in OHEMSampler(num=8, context=model.roi_head).describe()  # the default


def test_the_captured_region_reads_nothing_back_and_copies_nothing_from_the_host():
    """What a CUDA graph cannot capture: a read of the device (``.item()``, ``.tolist()``, ``nonzero``,
    ``unique``, ...) or a tensor made from host data (``torch.tensor(...)``: a host-to-device copy). The
    region ``cuda_graph=True`` captures (the head's targets, losses and ranking, then the selection rule)
    dispatches none of them, checked operator by operator on the CPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from mmdet_ohem.selection.graph import CapturedSelection, GraphKey
    forbidden = {'_local_scalar_dense', 'nonzero', 'unique', '_unique2', 'unique_dim', 'unique_consecutive',
                 'masked_select', 'lift_fresh', 'is_nonzero', 'equal', 'item'}

    class Watch(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            self.seen.add(name)
            if name in ('index', 'index_put', 'index_put_') and any(  # a bool mask: a nonzero inside
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or [])):
                self.seen.add('item')
            return func(*args, **(kwargs or {}))

    def watched(monkeypatch_target, watch):  # reads that dispatch no operator
        for name in ('tolist', 'numpy'):
            orig = getattr(torch.Tensor, name)

            def spy(self, *a, _orig=orig, **k):
                watch.seen.add('item')
                return _orig(self, *a, **k)
            monkeypatch_target.setattr(torch.Tensor, name, spy)

    model = build(mmdet_config(FASTER_FPN, sampler=dict(num=48, cuda_graph=True), rpn_max_per_img=200))
    sampler = model.roi_head.bbox_sampler
    for mode in ('cls+loc', 'cls', 'loc'):
        front = sampler.head.row_ranking(mode)
        inputs = (('cls_score', (81, ), torch.float32), ('bbox_pred', (320, ), torch.float32),
                  ('boxes', (4, ), torch.float32), ('gt_boxes', (4, ), torch.float32), ('labels', (), torch.long),
                  ('is_pos', (), torch.bool))
        for per_class in (False, True):
            key = GraphKey(2, 256, 48, 0.7, per_class, True, 0.5, 'cpu', inputs, front.key)
            sel = CapturedSelection(key, capture=False, front=front)
            sel.buffers['boxes'].copy_(torch.rand(2, 256, 4) * 50 + torch.tensor([0.0, 0.0, 60.0, 60.0]))
            sel.buffers['gt_boxes'].copy_(sel.buffers['boxes'] + 3)
            sel.buffers['labels'].random_(0, 81)
            sel.valid[:, :200] = True
            sel.replay()  # lazy state (the box coder's constants), as the warm-up before a capture
            watch = Watch()
            with pytest.MonkeyPatch.context() as mp:
                watched(mp, watch)
                with watch:
                    chosen, counts = sel.replay()
            assert not watch.seen & forbidden, (mode, per_class, watch.seen & forbidden)
            assert chosen.shape == (2, 256) and counts.shape == (2 * 11, )
    # the watch sees each kind of read (a control)
    x = torch.rand(6)
    for read in (lambda: x.sum().item(), lambda: x.tolist(), lambda: x[x > 0.5], lambda: torch.tensor([1.0]),
                 lambda: x.nonzero()):
        watch = Watch()
        with pytest.MonkeyPatch.context() as mp:
            watched(mp, watch)
            with watch:
                read()
        assert watch.seen & forbidden
