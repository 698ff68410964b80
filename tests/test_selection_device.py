"""The device-side (sync-free) loss-NMS and selection against the reference and a brute-force greedy.

Everything runs on the CPU with ``method='device'`` forced (the GPU default); the ``cuda`` tests repeat
the comparison with the tensors on a GPU.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdet_ohem.selection import greedy_loss_nms, select_hard_examples, select_hard_examples_batch
from mmdet_ohem.selection.nms import GreedyFixedPoint, rank_by_loss, suppression_matrix
from tests.test_selection import candidates, ref_greedy


@settings(max_examples=150, deadline=None)
@given(candidates(), st.sampled_from([0.3, 0.5, 0.7, 0.9, 1.0]), st.one_of(st.none(), st.integers(1, 80)),
       st.booleans())
def test_device_nms_equals_bruteforce_and_host(data, thr, max_keep, per_class):
    boxes, losses, labels = data
    lab = labels if per_class else None
    dev = greedy_loss_nms(boxes, losses, thr, max_keep, lab, method='device')
    host = greedy_loss_nms(boxes, losses, thr, max_keep, lab, method='host')
    want = ref_greedy(boxes.tolist(), losses.tolist(), thr, max_keep, labels.tolist() if per_class else None)
    assert dev.keep.tolist() == host.keep.tolist() == want
    assert int(dev.num_suppressed) == int(host.num_suppressed)


@st.composite
def mining_inputs(draw):
    boxes, losses, labels = draw(candidates())
    n = losses.shape[0]
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    bad = torch.rand(n, generator=g) < draw(st.sampled_from([0.0, 0.1, 0.5]))
    special = torch.tensor([math.nan, math.inf, -math.inf])[torch.randint(0, 3, (n, ), generator=g)]
    losses = torch.where(bad, special, losses)
    is_pos = torch.rand(n, generator=g) < draw(st.sampled_from([0.0, 0.2, 0.7, 1.0]))
    return boxes, losses, labels, is_pos


@settings(max_examples=150, deadline=None)
@given(mining_inputs(), st.sampled_from([None, 0.5, 0.7]), st.integers(1, 80), st.booleans(), st.booleans())
def test_device_selection_equals_host_selection(data, thr, num, per_class, split):
    """Same indices (in the same order), counts and positive split, with NaN/inf losses, ties, labels."""
    boxes, losses, labels, is_pos = data
    lab = labels if per_class else None
    pos = is_pos if split else None
    dev = select_hard_examples(losses, boxes, num, thr, lab, 'skip', pos, method='device')
    host = select_hard_examples(losses, boxes, num, thr, lab, 'skip', pos, method='host')
    assert dev.indices.tolist() == host.indices.tolist()
    assert int(dev.num_suppressed) == int(host.num_suppressed)
    assert int(dev.num_nonfinite) == int(host.num_nonfinite) == int((~torch.isfinite(losses)).sum())
    assert dev.num_pos == host.num_pos
    if split:
        assert is_pos[dev.indices[:dev.num_pos]].all() and not is_pos[dev.indices[dev.num_pos:]].any()
    # Without the split, the paper's order: hardest first; the split keeps each part's order.
    plain = select_hard_examples(losses, boxes, num, thr, lab, method='host').indices.tolist()
    if split:
        assert sorted(dev.indices.tolist(), key=plain.index) == plain


def test_device_selection_raises_on_nonfinite_when_asked():
    boxes = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    with pytest.raises(FloatingPointError, match='1 non-finite'):
        select_hard_examples(torch.tensor([1.0, math.nan]), boxes, 4, nonfinite='raise', method='device')


def test_fixed_point_over_an_empty_list():
    for valid in (torch.zeros(0, dtype=torch.bool), torch.zeros(2, 0, dtype=torch.bool)):
        fp = GreedyFixedPoint(torch.zeros(valid.shape + (0, ), dtype=torch.bool), valid, budget=4)
        assert fp.kept.shape == valid.shape and bool(fp.converged)
        assert not fp.filled.any() and not fp.num_suppressed.any()


def test_fixed_point_needs_more_steps_on_a_suppression_chain():
    """A chain a > b > c > ... where each box only overlaps its neighbour: greedy keeps every other box.

    Each decision depends on the previous one, so the fixed point needs about one step per link; the
    blind steps are not enough, ``converged`` says so, and ``resolve`` finishes the job exactly.
    """
    n = 40
    x = torch.arange(n, dtype=torch.float32) * 2.0
    boxes = torch.stack([x, torch.zeros(n), x + 20.0, torch.full((n, ), 10.0)], 1)  # neighbours: IoU 0.82
    losses = torch.linspace(2.0, 1.0, n)
    over = suppression_matrix(boxes[rank_by_loss(losses)], 0.8)
    fp = GreedyFixedPoint(over, torch.ones(n, dtype=torch.bool), budget=n, steps=3)
    assert not bool(fp.converged)
    fp.resolve()
    assert bool(fp.converged)
    want = ref_greedy(boxes.tolist(), losses.tolist(), 0.8)
    assert torch.nonzero(fp.kept).flatten().tolist() == want
    sel = select_hard_examples(losses, boxes, n, 0.8, method='device')  # resolves past the blind steps
    assert sel.indices.tolist() == want


def _same_selection(a, b):
    return (a.indices.tolist() == b.indices.tolist() and int(a.num_suppressed) == int(b.num_suppressed)
            and int(a.num_nonfinite) == int(b.num_nonfinite) and a.num_pos == b.num_pos
            and a.nonfinite_kept == b.nonfinite_kept)


def _same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6)


def _statistics_match(sel, losses):
    """The device method's statistics (read back with the result sizes) are those of its result."""
    if sel.mined_loss is None:
        return True
    finite = torch.isfinite(losses)
    return (sel.num_finite == int(finite.sum()) and _same_float(sel.mined_loss, float(losses[sel.indices].sum()))
            and _same_float(sel.candidate_loss, float(losses[finite].sum())))


@settings(max_examples=60, deadline=None)
@given(st.lists(mining_inputs(), min_size=1, max_size=4), st.sampled_from([None, 0.5, 0.7]),
       st.integers(1, 80), st.booleans(), st.booleans())
def test_batched_selection_equals_one_call_per_image(images, thr, num, per_class, split):
    """Images of different sizes padded into one problem: each result is that image's own selection
    (NaN/inf losses and the skip limit decided per image, no suppression across images)."""
    losses = [im[1] for im in images]
    boxes = [im[0] for im in images]
    labels = [im[2] for im in images] if per_class else None
    is_pos = [im[3] for im in images] if split else None
    got = select_hard_examples_batch(losses, boxes, num, thr, labels, 'skip', is_pos, method='device')
    assert len(got) == len(images)
    for b in range(len(images)):
        assert _statistics_match(got[b], losses[b])
        for method in ('device', 'host'):
            want = select_hard_examples(losses[b], boxes[b], num, thr, labels[b] if per_class else None, 'skip',
                                        is_pos[b] if split else None, method=method)
            assert _same_selection(got[b], want)


@settings(max_examples=60, deadline=None)
@given(st.lists(mining_inputs(), min_size=1, max_size=4), st.sampled_from([None, 0.5, 0.7]),
       st.integers(1, 80), st.booleans(), st.sampled_from([0.0, 0.3, 1.0]), st.integers(0, 2**31 - 1))
def test_selection_over_valid_rows_equals_the_selection_of_those_rows_alone(images, thr, num, per_class,
                                                                           invalid_share, seed):
    """Rows outside ``valid`` (ignored RoIs, unusable boxes) take no part, whatever they hold: here they
    carry the highest losses, NaN or infinite ones, and boxes that would suppress (or are NaN); each
    result is the selection of the valid rows alone, its indices mapped back, on both methods."""
    g = torch.Generator().manual_seed(seed)
    losses, boxes, labels, is_pos, valid = [], [], [], [], []
    for box, loss, lab, pos in images:
        n = loss.shape[0]
        ok = torch.rand(n, generator=g) >= invalid_share
        junk = torch.tensor([1e6, math.nan, math.inf])[torch.randint(0, 3, (n, ), generator=g)]
        losses.append(torch.where(ok, loss, junk))
        cover = torch.tensor([-1e4, -1e4, 1e4, 1e4])  # overlaps nothing much, but NaN boxes below
        boxes.append(torch.where(ok[:, None], box, torch.where(torch.rand(n, 1, generator=g) < 0.5, cover,
                                                               torch.full((4, ), math.nan))))
        labels.append(lab)
        is_pos.append(pos)
        valid.append(ok)
    lab = labels if per_class else None
    for method in ('device', 'host'):
        got = select_hard_examples_batch(losses, boxes, num, thr, lab, 'skip', is_pos, method=method, valid=valid)
        for b in range(len(images)):
            rows = torch.nonzero(valid[b]).flatten()
            want = select_hard_examples(losses[b][rows], boxes[b][rows], num, thr,
                                        labels[b][rows] if per_class else None, 'skip', is_pos[b][rows],
                                        method='host')
            assert got[b].indices.tolist() == rows[want.indices].tolist()
            assert got[b].num_pos == want.num_pos and got[b].num_candidates == rows.numel()
            assert int(got[b].num_suppressed) == int(want.num_suppressed)
            assert int(got[b].num_nonfinite) == int(want.num_nonfinite)
            assert got[b].nonfinite_kept == want.nonfinite_kept
            if got[b].mined_loss is not None:  # the device method's statistics, over the valid rows
                kept = losses[b][rows]
                finite = torch.isfinite(kept)
                assert got[b].num_finite == int(finite.sum())
                assert _same_float(got[b].mined_loss, float(losses[b][got[b].indices].sum()))
                assert _same_float(got[b].candidate_loss, float(kept[finite].sum()))


def test_valid_rows_that_are_not_finite_raise_only_when_valid():
    boxes = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    losses = torch.tensor([1.0, math.nan])
    for method in ('device', 'host'):
        sel = select_hard_examples(losses, boxes, 4, nonfinite='raise', method=method,
                                   valid=torch.tensor([True, False]))
        assert sel.indices.tolist() == [0] and sel.num_candidates == 1
        with pytest.raises(FloatingPointError, match='1 non-finite ranking losses out of 2'):
            select_hard_examples(losses, boxes, 4, nonfinite='raise', method=method, valid=torch.tensor([True, True]))
    with pytest.raises(ValueError, match=r'valid must have shape \(2,\), got \(3,\)'):
        select_hard_examples(losses, boxes, 4, valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match='1 valid'):
        select_hard_examples_batch([losses, losses], [boxes, boxes], 4, valid=[torch.ones(2, dtype=torch.bool)])


def test_batched_selection_identical_boxes_in_different_images_do_not_suppress():
    box = torch.tensor([[0., 0., 10., 10.]])
    got = select_hard_examples_batch([torch.tensor([1.0]), torch.tensor([2.0])], [box, box.clone()], 4, 0.5,
                                     method='device')
    assert [g.indices.tolist() for g in got] == [[0], [0]]
    assert [int(g.num_suppressed) for g in got] == [0, 0]


def test_batched_selection_resolves_a_chain_in_one_image_only():
    """One image needs more than the blind steps, the other converges at once: both exact."""
    n = 40
    x = torch.arange(n, dtype=torch.float32) * 2.0
    chain = torch.stack([x, torch.zeros(n), x + 20.0, torch.full((n, ), 10.0)], 1)
    far = torch.tensor([[0., 0., 5., 5.], [100., 100., 120., 120.]])
    losses = [torch.linspace(2.0, 1.0, n), torch.tensor([0.5, 3.0])]
    got = select_hard_examples_batch(losses, [chain, far], n, 0.8, method='device')
    assert got[0].indices.tolist() == ref_greedy(chain.tolist(), losses[0].tolist(), 0.8)
    assert got[1].indices.tolist() == [1, 0]


def test_batched_selection_edge_cases_and_errors():
    boxes = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    assert select_hard_examples_batch([], [], 4) == []
    empty = select_hard_examples_batch([torch.zeros(0), torch.tensor([1.0, 2.0])], [torch.zeros(0, 4), boxes], 4,
                                       method='device')
    assert empty[0].indices.numel() == 0 and empty[1].indices.tolist() == [1, 0]
    with pytest.raises(FloatingPointError, match='1 non-finite'):
        select_hard_examples_batch([torch.tensor([1.0, 2.0]), torch.tensor([1.0, math.nan])], [boxes, boxes], 4,
                                   nonfinite='raise', method='device')
    with pytest.raises(ValueError, match='one entry per image'):
        select_hard_examples_batch([torch.tensor([1.0, 2.0])], [boxes, boxes], 4)
    with pytest.raises(ValueError, match=r'boxes must be \(2, 4\)'):
        select_hard_examples_batch([torch.tensor([1.0, 2.0])], [boxes[:1]], 4)
    with pytest.raises(ValueError, match='num'):
        select_hard_examples_batch([torch.tensor([1.0, 2.0])], [boxes], 0)


def _small_prefix():
    """Device method on a ranked prefix of 8, or 2 per kept box, at most 40, so that lists exceed it."""
    from unittest import mock

    import mmdet_ohem.selection.nms as nms_mod
    return mock.patch.multiple(nms_mod, DEVICE_MIN_PREFIX=8, PREFIX_PER_KEPT=2, DEVICE_MAX_BOXES=40)


@pytest.fixture
def small_prefix():
    with _small_prefix():
        yield


@settings(max_examples=80, deadline=None)
@given(st.lists(mining_inputs(), min_size=1, max_size=3), st.sampled_from([0.3, 0.5, 0.7]), st.integers(1, 30),
       st.booleans())
def test_device_method_on_a_ranked_prefix_equals_the_host_method(images, thr, num, split):
    """Longer lists than the prefix: the prefix's first survivors, or the host method when the prefix
    holds too few; either way exactly the host result (per image, batched, and plain loss-NMS)."""
    with _small_prefix():
        _check_prefix_case(images, thr, num, split)


def _check_prefix_case(images, thr, num, split):
    losses = [im[1] for im in images]
    boxes = [im[0] for im in images]
    is_pos = [im[3] for im in images] if split else None
    batched = select_hard_examples_batch(losses, boxes, num, thr, None, 'skip', is_pos, method='device')
    for b in range(len(images)):
        pos = is_pos[b] if split else None
        want = select_hard_examples(losses[b], boxes[b], num, thr, None, 'skip', pos, method='host')
        assert _same_selection(select_hard_examples(losses[b], boxes[b], num, thr, None, 'skip', pos,
                                                    method='device'), want)
        assert _same_selection(batched[b], want)
        finite = torch.isfinite(losses[b])
        dev = greedy_loss_nms(boxes[b][finite], losses[b][finite], thr, num, method='device')
        host = greedy_loss_nms(boxes[b][finite], losses[b][finite], thr, num, method='host')
        assert dev.keep.tolist() == host.keep.tolist() and int(dev.num_suppressed) == int(host.num_suppressed)


def test_ranked_prefix_is_used_and_falls_back_when_it_holds_too_few(small_prefix, monkeypatch):
    """100 boxes, budget 5: the prefix (10 boxes) decides it; a pile of identical boxes (one survivor in
    the prefix) sends that image to the host method; both exact."""
    import mmdet_ohem.selection.nms as nms_mod
    import mmdet_ohem.selection.select as select_mod
    host_calls = []
    orig = nms_mod._greedy_host
    monkeypatch.setattr(nms_mod, '_greedy_host', lambda *a, **k: host_calls.append(1) or orig(*a, **k))
    g = torch.Generator().manual_seed(0)
    spread = torch.cat([torch.arange(100.)[:, None] * 30, torch.zeros(100, 1)], 1)
    spread = torch.cat([spread, spread + 10], 1)  # 100 disjoint boxes
    pile = torch.tensor([[0., 0., 10., 10.]]).repeat(100, 1)
    pile[60:] = spread[60:]  # the 60 identical boxes rank first below
    losses = [torch.rand(100, generator=g), torch.cat([torch.full((60, ), 5.0), torch.rand(40, generator=g)])]
    assert nms_mod.device_prefix(100, 5) == 10
    got = select_hard_examples_batch(losses, [spread, pile], 5, 0.5, method='device')
    assert got[0].indices.tolist() == torch.argsort(losses[0], descending=True)[:5].tolist()
    assert got[1].indices.tolist() == [0] + (60 + torch.argsort(losses[1][60:], descending=True)[:4]).tolist()
    assert len(host_calls) == 1  # the pile only
    assert got[1].indices.tolist() == select_mod.select_hard_examples(losses[1], pile, 5, 0.5,
                                                                      method='host').indices.tolist()
    assert greedy_loss_nms(pile, losses[1], 0.5, 5, method='device').keep.tolist() == got[1].indices.tolist()
    assert nms_mod.resolve_method('auto', torch.device('cuda'), 10 ** 6) == 'device'  # any size on CUDA
    assert nms_mod.resolve_method('auto', torch.device('cpu'), 10) == 'host'


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="'gpu'"):
        greedy_loss_nms(torch.zeros(1, 4), torch.zeros(1), 0.7, method='gpu')


def _iou_per_coordinate(boxes1, boxes2):
    """box_iou as it was first written (each coordinate separately): the reference for the bit-for-bit test."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), inter.new_zeros(()))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_box_iou_is_the_per_coordinate_iou_bit_for_bit(dtype):
    """box_iou's few-kernel form (with the areas computed once for ``box_iou(b, b)``, as the one-chunk
    suppression matrix calls it) computes the per-coordinate IoU exactly, degenerate and duplicate boxes
    too, so the device and host loss-NMS make the same decisions."""
    from mmdet_ohem.selection.nms import box_iou
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = int(torch.randint(1, 400, (1, ), generator=g))
        xy = torch.rand(n, 2, generator=g) * 500
        wh = torch.rand(n, 2, generator=g) * 100 - (10 if trial % 3 == 0 else 0)  # some inverted boxes
        boxes = torch.cat([xy, xy + wh], 1).to(dtype)
        if n > 10:
            boxes[:5] = boxes[5:10]  # duplicates
        want = _iou_per_coordinate(boxes, boxes)
        assert torch.equal(box_iou(boxes, boxes), want)
        assert torch.equal(box_iou(boxes, boxes.clone()), want)
        assert torch.equal(box_iou(boxes[: n // 2 + 1], boxes), want[: n // 2 + 1])


@pytest.mark.parametrize('batched', [False, True])
def test_suppression_matrix_in_row_chunks_equals_one_chunk(monkeypatch, batched):
    """Row chunks (long lists: the RPN miner's anchors, VGG16's 2 x 2,000 RoIs) share the areas computed
    once and give the one-chunk matrix bit for bit, labels included."""
    import mmdet_ohem.selection.nms as nms_mod
    g = torch.Generator().manual_seed(1)
    n = 300
    xy = torch.rand(2, n, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(2, n, 2, generator=g) * 60 + 1], -1)
    labels = torch.randint(0, 3, (2, n), generator=g)
    if not batched:
        boxes, labels = boxes[0], labels[0]
    want = suppression_matrix(boxes, 0.5, labels)
    monkeypatch.setattr(nms_mod, 'IOU_CHUNK_ELEMENTS', 7 * n)  # a few rows per chunk, a short last chunk
    got = suppression_matrix(boxes, 0.5, labels)
    assert torch.equal(got, want) and got.any()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_device_read_counts_are_exact_for_low_precision_losses(dtype):
    """The one read carries counts and loss sums in one tensor: counts above what bf16/fp16 hold exactly
    (257, 2,049) must still come back exact."""
    n, num = 3000, 2049
    losses = torch.linspace(0.0, 1.0, n).to(dtype)
    boxes = torch.arange(n, dtype=torch.float32)[:, None] * 20.0 + torch.tensor([0., 0., 10., 10.])
    for budget in (257, num):
        got = select_hard_examples_batch([losses, losses[:-5]], [boxes, boxes[:-5]], budget, None,
                                         method='device')
        for sel, m in zip(got, (n, n - 5)):
            assert sel.indices.numel() == budget and sel.num_finite == m
        again = select_hard_examples(losses, boxes, budget, 0.7, method='device')
        assert again.indices.numel() == budget and again.num_finite == n
