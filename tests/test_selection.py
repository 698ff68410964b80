"""The pure selection core against brute-force references (no detector involved)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdet_ohem.selection import (box_iou, greedy_loss_nms, select_hard_examples,
                                  select_hard_examples_ratio)


def ref_iou(a, b):
    """Plain-Python IoU, independent of box_iou."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def ref_greedy(boxes, losses, thr, max_keep=None, labels=None):
    """Textbook greedy NMS by loss: stable sort, full pass, then truncate."""
    order = sorted(range(len(losses)), key=lambda i: -losses[i])  # Python's sort is stable
    keep = []
    for i in order:
        if all(ref_iou(boxes[i], boxes[k]) <= thr or (labels is not None and labels[i] != labels[k])
               for k in keep):
            keep.append(i)
    return keep if max_keep is None else keep[:max_keep]


@st.composite
def candidates(draw, max_n=120):
    n = draw(st.integers(0, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 80
    wh = torch.rand(n, 2, generator=g) * 40 + draw(st.sampled_from([0.0, 1.0]))
    boxes = torch.cat([xy, xy + wh], 1)
    # Integer-valued losses from a small range force ties, which must resolve by input order.
    if draw(st.booleans()):
        losses = torch.randint(0, 5, (n, ), generator=g).float()
    else:
        losses = torch.rand(n, generator=g) * 3
    labels = torch.randint(0, 3, (n, ), generator=g)
    return boxes, losses, labels


@settings(max_examples=150, deadline=None)
@given(candidates(), st.sampled_from([0.3, 0.5, 0.7, 0.9, 1.0]), st.one_of(st.none(), st.integers(1, 80)),
       st.booleans(), st.sampled_from([1, 7, 256]))
def test_greedy_nms_equals_bruteforce(data, thr, max_keep, per_class, block):
    boxes, losses, labels = data
    lab = labels if per_class else None
    got = greedy_loss_nms(boxes, losses, thr, max_keep, lab, block_size=block).keep.tolist()
    want = ref_greedy(boxes.tolist(), losses.tolist(), thr, max_keep,
                      labels.tolist() if per_class else None)
    assert got == want


@settings(max_examples=100, deadline=None)
@given(candidates(), st.sampled_from([0.5, 0.7]), st.integers(1, 64))
def test_selected_boxes_never_overlap_above_threshold(data, thr, num):
    boxes, losses, _ = data
    sel = select_hard_examples(losses, boxes, num, thr)
    kept = boxes[sel.indices]
    assert sel.indices.numel() <= num
    if kept.shape[0] > 1:
        iou = box_iou(kept, kept)
        iou.fill_diagonal_(0)
        assert float(iou.max()) <= thr
    # Hardest first.
    sel_losses = losses[sel.indices]
    assert torch.all(sel_losses[:-1] >= sel_losses[1:])


@settings(max_examples=100, deadline=None)
@given(candidates(), st.integers(1, 200))
def test_without_nms_budget_is_exact_topk(data, num):
    boxes, losses, _ = data
    sel = select_hard_examples(losses, boxes, num, iou_threshold=None)
    assert sel.indices.numel() == min(num, losses.numel())
    assert sel.num_suppressed == 0
    if sel.indices.numel():
        # Everything selected is at least as hard as everything left out.
        rest = torch.ones(losses.numel(), dtype=torch.bool)
        rest[sel.indices] = False
        if rest.any():
            assert float(losses[sel.indices].min()) >= float(losses[rest].max())


def test_suppression_count_matches_examined_duplicates():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9.9], [50, 50, 60, 60], [0, 0, 10, 9.8],
                          [100, 100, 110, 110]], dtype=torch.float)
    losses = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    res = greedy_loss_nms(boxes, losses, 0.7)
    assert res.keep.tolist() == [0, 2, 4]
    assert res.num_suppressed == 2
    # With a budget of 2, the walk stops at box 2: only box 1 was examined and suppressed.
    res2 = greedy_loss_nms(boxes, losses, 0.7, max_keep=2)
    assert res2.keep.tolist() == [0, 2] and res2.num_suppressed == 1


def test_fewer_candidates_than_budget_and_empty():
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float)
    sel = select_hard_examples(torch.tensor([1.0, 2.0]), boxes, 64)
    assert sel.indices.tolist() == [1, 0]
    empty = select_hard_examples(torch.zeros(0), torch.zeros(0, 4), 64)
    assert empty.indices.numel() == 0 and empty.indices.dtype == torch.long


def test_degenerate_boxes_are_kept_and_never_suppress():
    boxes = torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], dtype=torch.float)
    res = greedy_loss_nms(boxes, torch.tensor([3.0, 2.0, 1.0]), 0.5)
    assert res.keep.tolist() == [0, 1, 2]


def test_all_background_batch_is_allowed():
    # Paper OHEM has no ratio: if every hard RoI is background, the batch is all background.
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(100, 2, generator=g) * 500
    boxes = torch.cat([boxes, boxes + 20], 1)
    is_pos = torch.zeros(100, dtype=torch.bool)
    is_pos[:10] = True
    losses = torch.where(is_pos, 0.01, 1.0) + torch.rand(100, generator=g) * 0.01
    sel = select_hard_examples(losses, boxes, 32, 0.7)
    assert sel.indices.numel() == 32 and not is_pos[sel.indices].any()
    # ...whereas ratio mode keeps its fg quota.
    r = select_hard_examples_ratio(losses, boxes, is_pos, 32, 0.25)
    assert int(is_pos[r.indices].sum()) == 8


@settings(max_examples=80, deadline=None)
@given(candidates(max_n=150), st.integers(1, 100), st.sampled_from([0.0, 0.25, 0.5, 1.0]),
       st.sampled_from([-1, 0, 1, 3]))
def test_ratio_mode_matches_mmdet_quota_rules(data, num, frac, ub):
    boxes, losses, labels = data
    is_pos = labels == 0
    r = select_hard_examples_ratio(losses, boxes, is_pos, num, frac, ub)
    pos = [i for i in r.indices.tolist() if is_pos[i]]
    neg = [i for i in r.indices.tolist() if not is_pos[i]]
    n_pos_pool, n_neg_pool = int(is_pos.sum()), int((~is_pos).sum())
    # mmdet's BaseSampler arithmetic, written out.
    exp_pos = min(n_pos_pool, int(num * frac))
    exp_neg = num - exp_pos
    if ub >= 0:
        exp_neg = min(exp_neg, int(ub * max(1, exp_pos)))
    exp_neg = min(exp_neg, n_neg_pool)
    assert (len(pos), len(neg)) == (exp_pos, exp_neg)
    assert r.indices.tolist() == pos + neg  # positives first
    for part, pool in ((pos, is_pos), (neg, ~is_pos)):
        if part and len(part) < int(pool.sum()):
            left = torch.ones_like(pool)
            left[part] = False
            assert float(losses[part].min()) >= float(losses[pool & left].max())


def test_nonfinite_losses_are_never_mined_or_raise():
    boxes = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]],
                         dtype=torch.float)
    losses = torch.tensor([1.0, math.nan, math.inf, 0.5])
    sel = select_hard_examples(losses, boxes, 4)
    assert sel.indices.tolist() == [0, 3] and sel.num_nonfinite == 2
    with pytest.raises(FloatingPointError, match='2 non-finite'):
        select_hard_examples(losses, boxes, 4, nonfinite='raise')


@pytest.mark.parametrize('kwargs, match', [
    (dict(num=0), 'num'), (dict(num=-3), 'num'), (dict(num=2.5), 'num'),
    (dict(iou_threshold=0.0), 'iou_threshold'), (dict(iou_threshold=1.5), 'iou_threshold'),
    (dict(nonfinite='ignore'), 'nonfinite'),
])
def test_bad_settings_name_the_value(kwargs, match):
    args = dict(losses=torch.ones(3), boxes=torch.rand(3, 4), num=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as e:
        select_hard_examples(**args)
    assert repr(list(kwargs.values())[0]) in str(e.value)


def test_ratio_bad_fraction_names_the_value():
    with pytest.raises(ValueError, match=r'pos_fraction.*1\.5'):
        select_hard_examples_ratio(torch.ones(3), torch.rand(3, 4), torch.ones(3, dtype=torch.bool), 2, 1.5)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r'\(3, 4\)'):
        select_hard_examples(torch.ones(3), torch.rand(2, 4), 2)
