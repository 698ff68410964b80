""""M": multi-scale training and testing - the configs, the sweep edit that derives them, and the
TestTimeAug + DetTTAModel test path on a tiny trained model."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

import mmdet_ohem  # noqa: F401
from ohem_experiments.config_edits import multiscale_scales, set_iter_bbox, set_iters, set_multiscale

ROOT = Path(__file__).resolve().parents[1]
PAPER_SCALES = [480, 576, 688, 864, 1200]
MS = ['frcn/faster_rcnn_vgg16_voc07_ms.py', 'ohem/faster_rcnn_vgg16_ohem_voc07_ms.py',
      'frcn/faster_rcnn_vgg16_voc07_ms_b.py', 'ohem/faster_rcnn_vgg16_ohem_voc07_ms_b.py']
B_ONLY = ['frcn/faster_rcnn_vgg16_voc07_b.py', 'ohem/faster_rcnn_vgg16_ohem_voc07_b.py']


def load(name: str) -> Config:
    return Config.fromfile(str(ROOT / 'configs' / name))


def plain(node):
    """``node`` without the ``_scope_`` keys that mmengine adds to dicts inherited from ``mmdet::`` bases."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(plain(v) for v in node)
    return node


def _tta_transforms(cfg: Config) -> list:
    assert [t['type'] for t in cfg.tta_pipeline] == ['LoadImageFromFile', 'TestTimeAug']
    return cfg.tta_pipeline[1]['transforms']


@pytest.mark.parametrize('name', MS)
def test_multiscale_configs(name):
    cfg = load(name)
    base = load(name.replace('_ms', '').replace('_b.py', '.py'))
    pipe = cfg.train_dataloader.dataset.pipeline
    resize = [t for t in pipe if 'Resize' in t['type']]
    assert resize == [dict(type='RandomChoiceResize', scales=[(2000, s) for s in PAPER_SCALES], keep_ratio=True)]
    groups = _tta_transforms(cfg)
    assert groups[0] == [dict(type='Resize', scale=(2000, s), keep_ratio=True) for s in PAPER_SCALES]
    assert groups[1] == [dict(type='RandomFlip', prob=0.)]
    assert {'flip', 'flip_direction', 'scale_factor'} <= set(groups[-1][0]['meta_keys'])
    assert cfg.tta_model == dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.3),
                                                                  max_per_img=100))
    assert cfg.test_with_tta is True
    # nothing else changes: same sampler, assigner, schedule as the single-scale config
    assert cfg.model.train_cfg == base.model.train_cfg and cfg.train_cfg == base.train_cfg
    assert cfg.test_dataloader == base.test_dataloader  # single scale without --tta
    want_head = 'IterBBoxRegRoIHead' if name.endswith('_b.py') else 'StandardRoIHead'
    assert cfg.model.roi_head.type == want_head


@pytest.mark.parametrize('name', B_ONLY)
def test_b_configs_switch_the_roi_head_only(name):
    cfg, base = load(name), load(name.replace('_b.py', '.py'))
    roi = cfg.model.roi_head
    assert (roi.type, roi.num_iters, roi.vote_iou) == ('IterBBoxRegRoIHead', 2, 0.5)
    assert cfg.model.test_cfg.rcnn.nms == dict(type='nms', iou_threshold=0.3)
    assert {k: v for k, v in roi.items() if k not in ('type', 'num_iters', 'vote_iou')} == \
        {k: v for k, v in base.model.roi_head.items() if k != 'type'}
    assert cfg.train_dataloader == base.train_dataloader and 'tta_model' not in cfg


def test_scales_follow_the_paper_and_scale_with_the_base():
    assert multiscale_scales(600) == (tuple(PAPER_SCALES), 2000)
    assert multiscale_scales(160) == ((128, 154, 183, 230, 320), 533)
    with pytest.raises(ValueError, match='positive'):
        multiscale_scales(0)


def test_the_sweep_edit_derives_the_config_files():
    derived = set_multiscale(load('frcn/faster_rcnn_vgg16_voc07.py'), True)
    written = load('frcn/faster_rcnn_vgg16_voc07_ms.py')
    assert plain(derived.train_dataloader.dataset.pipeline) == plain(written.train_dataloader.dataset.pipeline)
    assert plain(derived.tta_pipeline) == plain(written.tta_pipeline)
    assert derived.tta_model == written.tta_model and derived.test_with_tta is True
    b = set_iter_bbox(load('frcn/faster_rcnn_vgg16_voc07.py'), True)
    assert b.model.roi_head == load('frcn/faster_rcnn_vgg16_voc07_b.py').model.roi_head
    assert set_iter_bbox(b, False).model.roi_head == load('frcn/faster_rcnn_vgg16_voc07.py').model.roi_head
    toy = set_multiscale(Config.fromfile(str(ROOT / 'configs/toy/toy_ohem.py')), True)
    assert _tta_transforms(toy)[0][-1] == dict(type='Resize', scale=(533, 320), keep_ratio=True)
    with pytest.raises(ValueError, match='multiscale'):
        set_multiscale(load('frcn/faster_rcnn_vgg16_voc07.py'), 'yes')


@pytest.mark.slow
def test_tta_path_trains_and_tests_a_tiny_model(tmp_path, monkeypatch):
    """A toy config with M, 2 iterations on a tiny VOC folder, tested through TestTimeAug + DetTTAModel."""
    from mmdet.models.test_time_augs import DetTTAModel

    from ohem_experiments import runs
    from ohem_experiments.config_edits import set_data_root
    from ohem_experiments.toy_voc import generate_toy_voc
    generate_toy_voc(tmp_path / 'data', num_trainval=4, num_test=2, image_size=64)
    cfg = Config.fromfile(str(ROOT / 'configs/toy/toy_frcn.py'))
    set_data_root(cfg, str(tmp_path / 'data'))
    set_iters(cfg, 2)
    set_multiscale(cfg, True)
    cfg.model.test_cfg.rpn.max_per_img = 100
    views = []
    real_merge = DetTTAModel.merge_preds

    def spy(self, data_samples_list):
        views.extend(len(v) for v in data_samples_list)
        return real_merge(self, data_samples_list)

    monkeypatch.setattr(DetTTAModel, 'merge_preds', spy)
    result = runs.train_and_evaluate(cfg, tmp_path / 'work', probe=False)
    assert result.iters == 2 and 0.0 <= result.map <= 1.0
    assert result.extra['device'] == 'cpu'  # where it trained (on a GPU: 'cuda:0 (<GPU name>)')
    assert views == [5, 5]  # both test images, each at the five scales
