""""B": iterative box regression with weighted voting - the pure rule on hand-made boxes, the RoI head's
pooling of the two passes (stubbed head with known outputs), and a real tiny detector end to end."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.structures import InstanceData

import mmdet_ohem  # noqa: F401
from mmdet_ohem.models import box_voting, nms_with_box_voting

ROOT = Path(__file__).resolve().parents[1]
T = torch.tensor
K = [0., 0., 10., 10.]
A = [1., 1., 11., 11.]     # IoU(K, A) = 81 / 119 = 0.68
B = [0., 0., 10., 20.]     # IoU(K, B) = 100 / 200 = 0.5 exactly: votes (>=)
C = [20., 20., 30., 30.]   # no overlap
E = [5., 0., 15., 10.]     # IoU(K, E) = 50 / 150 = 0.33: suppressed by NMS 0.3, too far to vote at 0.5


def close(t: torch.Tensor, expected) -> bool:
    """``t`` equals the nested list ``expected`` up to float rounding."""
    return t.flatten().tolist() == pytest.approx(torch.tensor(expected, dtype=torch.float64).flatten().tolist())


def test_box_voting_is_the_score_weighted_mean_of_same_class_overlaps():
    pool = T([K, A, B, C, K, E])
    scores = T([0.6, 0.3, 0.1, 0.9, 0.7, 0.2])
    labels = T([0, 0, 0, 0, 1, 0])
    voted = box_voting(T([K]), T([0]), pool, scores, labels, vote_iou=0.5)
    # (0.6 K + 0.3 A + 0.1 B) / 1.0; C does not overlap, the class-1 copy of K and E (IoU 0.33) do not vote
    assert close(voted, [[0.3, 0.3, 10.3, 11.3]])
    # a higher voting threshold leaves K and A only
    voted = box_voting(T([K]), T([0]), pool, scores, labels, vote_iou=0.6)
    assert close(voted, [[1 / 3, 1 / 3, 31 / 3, 31 / 3]])
    # no voter with positive weight: the box stays as it is
    assert box_voting(T([C]), T([2]), pool, scores, labels).tolist() == [C]
    assert box_voting(T([K]), T([0]), T([K]), T([0.0]), T([0])).tolist() == [K]


def test_nms_then_voting_on_hand_made_boxes():
    boxes = T([K, A, C, K, E, B])
    scores = T([0.6, 0.3, 0.5, 0.9, 0.2, 0.1])
    labels = T([0, 0, 0, 1, 0, 0])
    out_boxes, out_scores, out_labels = nms_with_box_voting(boxes, scores, labels, nms_iou=0.3, vote_iou=0.5)
    # per class NMS 0.3: class 0 keeps K (A, E, B suppressed) and C; class 1 keeps its K. Highest score first.
    assert out_labels.tolist() == [1, 0, 0]
    assert out_scores.tolist() == pytest.approx([0.9, 0.6, 0.5])
    assert close(out_boxes, [K, [0.3, 0.3, 10.3, 11.3], C])
    top2 = nms_with_box_voting(boxes, scores, labels, max_per_img=2)
    assert top2[1].tolist() == pytest.approx([0.9, 0.6])
    empty = nms_with_box_voting(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert [t.shape[0] for t in empty] == [0, 0, 0]


def test_bad_inputs_name_the_setting():
    with pytest.raises(ValueError, match='nms_iou'):
        nms_with_box_voting(T([K]), T([1.]), T([0]), nms_iou=0.0)
    with pytest.raises(ValueError, match='vote_iou'):
        box_voting(T([K]), T([0]), T([K]), T([1.]), T([0]), vote_iou=1.5)
    with pytest.raises(ValueError, match='scores'):
        nms_with_box_voting(T([K]), T([1., 2.]), T([0]))


# ------------------------------------------------------------------------------------------------
# The RoI head: two passes pooled, NMS, voting, rescale (head outputs stubbed with known values)
# ------------------------------------------------------------------------------------------------

def toy_cfg(iter_bbox: bool = True, num_classes: int = 4) -> Config:
    from ohem_experiments.config_edits import set_iter_bbox
    cfg = Config.fromfile(str(ROOT / 'configs/toy/toy_frcn.py'))
    cfg.model.roi_head.bbox_head.num_classes = num_classes
    return set_iter_bbox(cfg, iter_bbox)


def build(cfg: Config):
    from ohem_experiments.quick_detectors import build_detector
    return build_detector(cfg).eval()


def test_head_pools_both_passes_then_nms_and_votes(monkeypatch):
    model = build(toy_cfg(num_classes=2))
    head = model.roi_head
    assert type(head).__name__ == 'IterBBoxRegRoIHead' and head.num_iters == 2 and head.vote_iou == 0.5
    P = T([K])
    calls = []

    def stub(x, boxes, img_meta):
        """Pass 1 sees the proposal, pass 2 the class-0 and class-1 regressions of it (in that order).
        Class 0 regresses by +1 px, class 1 keeps the box."""
        calls.append(boxes.clone())
        reg = torch.stack([boxes + 1, boxes], dim=1)
        if len(calls) == 1:
            return T([[0.8, 0.1]]), reg
        return T([[0.6, 0.2], [0.3, 0.04]]), reg

    monkeypatch.setattr(head, '_score_and_regress', stub)
    test_cfg = ConfigDict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.3), max_per_img=100)
    meta = dict(img_shape=(40, 40), scale_factor=(2.0, 2.0))
    feats = (torch.zeros(1, 64, 3, 3),)
    res = head.predict_bbox(feats, [meta], [InstanceData(bboxes=P)], test_cfg, rescale=False)[0]
    assert [c.tolist() for c in calls] == [[K], [A, K]]
    # pooled: (A, 0.8, c0) and (K, 0.1, c1) from pass 1; (A + 1, 0.6, c0) from pass 2 (its c1 score 0.04 is
    # below score_thr). NMS keeps A (c0) and K (c1); A's coordinates become (0.8 A + 0.6 (A + 1)) / 1.4.
    shift = 0.6 / 1.4
    assert res.labels.tolist() == [0, 1]
    assert res.scores.tolist() == pytest.approx([0.8, 0.1])
    assert close(res.bboxes, [[a + shift for a in A], K])
    calls.clear()
    scaled = head.predict_bbox(feats, [meta], [InstanceData(bboxes=P)], test_cfg, rescale=True)[0]
    assert close(scaled.bboxes, (res.bboxes / 2).tolist())
    with pytest.raises(ValueError, match='iou_threshold'):
        head.predict_bbox(feats, [meta], [InstanceData(bboxes=P)],
                          ConfigDict(score_thr=0.05, nms=dict(type='soft_nms', iou_threshold=0.3), max_per_img=100))


def test_bad_head_settings_are_rejected():
    cfg = toy_cfg()
    cfg.model.roi_head.num_iters = 0
    with pytest.raises(ValueError, match='num_iters'):
        build(cfg)


def test_tiny_detector_predicts_end_to_end_with_two_passes():
    from ohem_experiments.quick_detectors import synthetic_batch
    cfg = toy_cfg()
    proposals = cfg.model.test_cfg.rpn.max_per_img = 200  # an upper bound: fewer may survive RPN NMS
    model = build(cfg)
    head = model.roi_head
    seen = []
    real_forward = head._bbox_forward

    def counting_forward(x, rois):
        seen.append(rois.shape[0])
        return real_forward(x, rois)

    head._bbox_forward = counting_forward
    data = synthetic_batch(model, batch_size=2, size=160)
    with torch.no_grad():
        preds = model.predict(data['inputs'], data['data_samples'], rescale=True)
    assert len(preds) == 2
    num_classes = head.bbox_head.num_classes
    assert len(seen) == 4  # two images, two passes each
    for first, second in zip(seen[0::2], seen[1::2]):
        assert first <= proposals and second == first * num_classes  # pass 2: every class's regression
    for p in preds:
        inst = p.pred_instances
        n = inst.bboxes.shape[0]
        assert 0 < n <= 100 and inst.scores.shape == (n,) and inst.labels.shape == (n,)
        assert (inst.scores > 0.05).all() and (inst.scores[:-1] >= inst.scores[1:]).all()
        assert ((inst.labels >= 0) & (inst.labels < num_classes)).all()
        h, w = p.ori_shape
        b = inst.bboxes
        assert (b[:, 0] >= -1e-3).all() and (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
