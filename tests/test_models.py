"""The paper's model parts: VGG16 backbone, FRCN box head, ImageNet VGG16 key mapping and loading."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import mmdet_ohem  # noqa: F401  (registers the parts)
from mmdet_ohem.models import FRCNBBoxHead, VGG16, VGG16Pretrained, convert_torchvision_vgg16, load_vgg16_part
from ohem_experiments.toy_vgg import shrink_vgg16
from mmdet_ohem.config_tools import use_roi_align

ROOT = Path(__file__).resolve().parents[1]
FASTER_VGG16 = ROOT / 'configs/_base_/models/faster_rcnn_vgg16.py'

# torchvision.models.vgg16().state_dict(): (key, shape), written out so the test needs no torchvision.
_TV_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
             (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512),
             (28, 512, 512)]
TORCHVISION_VGG16_SHAPES = {}
for _i, _cin, _cout in _TV_CONVS:
    TORCHVISION_VGG16_SHAPES[f'features.{_i}.weight'] = (_cout, _cin, 3, 3)
    TORCHVISION_VGG16_SHAPES[f'features.{_i}.bias'] = (_cout,)
TORCHVISION_VGG16_SHAPES.update({
    'classifier.0.weight': (4096, 25088), 'classifier.0.bias': (4096,),
    'classifier.3.weight': (4096, 4096), 'classifier.3.bias': (4096,),
    'classifier.6.weight': (1000, 4096), 'classifier.6.bias': (1000,)})


def fake_torchvision_vgg16(convs_only_real: bool = False) -> dict:
    """A state dict with torchvision VGG16's keys and shapes (random values; distinct per tensor).

    ``convs_only_real`` makes the classifier tiny (wrong shapes) to keep mismatch tests cheap.
    """
    g = torch.Generator().manual_seed(1)
    sd = {}
    for k, shape in TORCHVISION_VGG16_SHAPES.items():
        if convs_only_real and k.startswith('classifier'):
            shape = (2, 3) if k.endswith('weight') else (2,)
        sd[k] = torch.randn(shape, generator=g)
    return sd


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vgg16_layout_is_torchvisions_without_pool5():
    net = VGG16()
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = {f'features.{k[len("features."):]}': s for k, s in TORCHVISION_VGG16_SHAPES.items()
                if k.startswith('features.')}
    assert own == expected
    assert len(net.features) == 30  # torchvision's 31 minus pool5
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.features) == 4
    feats = net(torch.zeros(1, 3, 64, 96))
    assert isinstance(feats, tuple) and len(feats) == 1
    assert feats[0].shape == (1, 512, 4, 6)  # stride 16, 512 channels
    assert net.out_channels == 512


def test_vgg16_freezes_conv1_and_conv2_only():
    net = VGG16()  # frozen_stages=2 by default, as in Fast R-CNN
    frozen = {k for k, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {f'features.{i}.{p}' for i in (0, 2, 5, 7) for p in ('weight', 'bias')}
    assert all(p.requires_grad for p in VGG16(base_channels=8, frozen_stages=0).parameters())


def test_vgg16_width_option_scales_every_stage():
    net = VGG16(base_channels=8)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert net(torch.zeros(2, 3, 48, 32))[0].shape == (2, 64, 3, 2)


@pytest.mark.parametrize('kwargs, match', [
    (dict(base_channels=0), 'base_channels.*0'), (dict(base_channels=8.0), 'base_channels.*8.0'),
    (dict(frozen_stages=6), 'frozen_stages.*6'), (dict(frozen_stages=True), 'frozen_stages.*True')])
def test_vgg16_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VGG16(**kwargs)


def _head(**kw) -> FRCNBBoxHead:
    args = dict(in_channels=8, fc_out_channels=16, roi_feat_size=7, num_classes=3)
    args.update(kw)
    return FRCNBBoxHead(**args)


def test_frcn_head_has_dropout_in_training_only():
    head = _head()
    head.init_weights()
    x = torch.randn(5, 8, 7, 7)
    head.train()
    a, b = head(x)[0], head(x)[0]
    assert a.shape == (5, 4) and not torch.allclose(a, b)  # dropout 0.5 active
    head.eval()
    c, reg = head(x)
    assert torch.equal(c, head(x)[0]) and reg.shape == (5, 12)
    assert [type(m).__name__ for m in head.shared_fcs] == ['Linear', 'Linear']
    assert head.shared_fcs[0].in_features == 8 * 49 and head.shared_fcs[1].out_features == 16


def test_frcn_head_init_cfg_adds_to_defaults():
    head = _head(init_cfg=dict(type='VGG16Pretrained', part='fc67', checkpoint='x.pth'))
    types = [c['type'] for c in head.init_cfg]
    assert types[-1] == 'VGG16Pretrained' and 'Normal' in types  # fc_cls/fc_reg keep their init
    with pytest.raises(ValueError, match='dropout.*1.5'):
        _head(dropout=1.5)


def test_convert_maps_convs_and_fc6_fc7_and_drops_fc8():
    sd = fake_torchvision_vgg16(convs_only_real=True)
    out = convert_torchvision_vgg16({'module.' + k: v for k, v in sd.items()})  # DataParallel prefix ok
    assert set(out) == {f'backbone.{k}' for k in sd if k.startswith('features.')} | {
        f'roi_head.bbox_head.shared_fcs.{j}.{p}' for j in (0, 1) for p in ('weight', 'bias')}
    assert out['backbone.features.28.weight'] is sd['features.28.weight']
    assert out['roi_head.bbox_head.shared_fcs.0.weight'] is sd['classifier.0.weight']
    assert out['roi_head.bbox_head.shared_fcs.1.bias'] is sd['classifier.3.bias']
    del sd['classifier.3.weight']
    with pytest.raises(KeyError, match='classifier.3.weight'):
        convert_torchvision_vgg16(sd)


def test_loading_into_narrow_model_names_the_mismatch():
    sd = convert_torchvision_vgg16(fake_torchvision_vgg16(convs_only_real=True))
    with pytest.raises(ValueError, match=r'backbone.features.0.weight.*\(64, 3, 3, 3\).*\(8, 3, 3, 3\)'):
        load_vgg16_part(VGG16(base_channels=8), sd, 'backbone')
    with pytest.raises(ValueError, match='part must be one of'):
        VGG16Pretrained(part='fc8')


@pytest.mark.slow
def test_imagenet_init_fills_backbone_and_fc6_fc7_at_real_width(tmp_path):
    """The one real-width build: the config's init_cfg pointed at a torchvision-format file made here."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules


    register_all_modules()
    tv = fake_torchvision_vgg16()
    raw = tmp_path / 'vgg16-397923af.pth'
    torch.save(tv, raw)
    cfg = use_roi_align(Config.fromfile(str(FASTER_VGG16)))
    cfg.model.backbone.init_cfg.checkpoint = str(raw)
    cfg.model.roi_head.bbox_head.init_cfg.checkpoint = str(raw)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    bb, head = model.backbone, model.roi_head.bbox_head
    for k, v in tv.items():
        if k.startswith('features.'):
            assert torch.equal(bb.state_dict()[k], v), k
    assert torch.equal(head.shared_fcs[0].weight, tv['classifier.0.weight'])
    assert torch.equal(head.shared_fcs[1].bias, tv['classifier.3.bias'])
    assert head.fc_cls.weight.shape == (21, 4096)  # fc8 is not used; cls/box layers get their own init
    assert head.fc_cls.weight.std() < 0.02
    assert not bb.features[0].weight.requires_grad and bb.features[10].weight.requires_grad

    # The offline converter's output loads the same tensors through the same initializer.
    conv = tmp_path / 'vgg16_frcn_init.pth'
    assert _load_tool('convert_vgg16_torchvision').main([str(raw), str(conv)]) == 0
    with torch.no_grad():
        for p in list(bb.parameters()) + list(head.shared_fcs.parameters()):
            p.zero_()
    VGG16Pretrained(part='backbone', checkpoint=str(conv))(bb)
    VGG16Pretrained(part='fc67', checkpoint=str(conv))(head)
    assert torch.equal(bb.features[28].weight, tv['features.28.weight'])
    assert torch.equal(head.shared_fcs[0].weight, tv['classifier.0.weight'])


def test_shrink_vgg16_keeps_the_architecture():
    cfg = Config.fromfile(str(FASTER_VGG16))
    shrink_vgg16(cfg, base_channels=8, fc_out_channels=32)
    m = cfg.model
    assert m.backbone.base_channels == 8 and m.backbone.init_cfg is None
    roi = m.roi_head
    assert m.rpn_head.in_channels == roi.bbox_roi_extractor.out_channels == roi.bbox_head.in_channels == 64
    assert m.roi_head.bbox_head.fc_out_channels == 32 and m.roi_head.bbox_head.init_cfg is None
    assert roi.bbox_head.type == 'FRCNBBoxHead' and roi.bbox_roi_extractor.roi_layer.type == 'RoIPool'
    with pytest.raises(ValueError, match="'ResNet'"):
        shrink_vgg16(dict(model=dict(backbone=dict(type='ResNet'))))
    with pytest.raises(ValueError, match='base_channels.*-1'):
        shrink_vgg16(cfg, base_channels=-1)


@pytest.mark.parametrize('neg_iou_thr, expected', [((0.0, 0.5), [0, 0, 1, -1]), ((0.1, 0.5), [-1, 0, 1, -1])])
def test_bg_lo_zero_makes_zero_overlap_rois_background(neg_iou_thr, expected):
    """mmdet's MaxIoUAssigner tests ``lo <= IoU < hi``: with bg_lo = 0.0 an IoU of exactly 0 is background."""
    from mmdet.models.task_modules.assigners import MaxIoUAssigner
    from mmengine.structures import InstanceData
    gt = InstanceData(bboxes=torch.tensor([[0., 0., 10., 10.]]), labels=torch.tensor([2]))
    rois = torch.tensor([[50., 50., 60., 60.],   # IoU 0 (disjoint): bg only when bg_lo = 0
                         [0., 0., 10., 40.],     # IoU 0.25: bg
                         [0., 0., 10., 11.],     # IoU ~0.91: fg
                         [70., 70., 90., 90.]])  # inside an ignore region: IoU set to -1, never bg
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=neg_iou_thr, min_pos_iou=0.5,
                              match_low_quality=False, ignore_iof_thr=0.5)
    ignore = InstanceData(bboxes=torch.tensor([[68., 68., 92., 92.]]))
    res = assigner.assign(InstanceData(priors=rois), gt, ignore)
    assert res.gt_inds.tolist() == expected
