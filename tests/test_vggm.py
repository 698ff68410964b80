"""VGG_CNN_M_1024 ("VGGM"): layer shapes, stride, parameter count, Caffe weight conversion, configs."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmdet_ohem  # noqa: F401  (registers the parts)
from mmdet_ohem.config_tools import use_roi_align
from mmdet_ohem.models import VGGM, VGGMBBoxHead, VGGMPretrained, convert_vggm, read_caffemodel

ROOT = Path(__file__).resolve().parents[1]
VGGM_CONFIGS = sorted(p.relative_to(ROOT / 'configs').as_posix() for p in (ROOT / 'configs').rglob('*vggm*.py')
                      if '_base_' not in p.parts)

# Fast R-CNN's models/VGG_CNN_M_1024/train.prototxt: (name, out, in, kernel) of every layer with weights.
PROTOTXT = [('conv1', 96, 3, 7), ('conv2', 256, 96, 5), ('conv3', 512, 256, 3), ('conv4', 512, 512, 3),
            ('conv5', 512, 512, 3), ('fc6', 4096, 512 * 6 * 6, None), ('fc7', 1024, 4096, None)]


def _params(shapes) -> int:
    return sum(o * i * (k * k if k else 1) + o for _, o, i, k in shapes)


def test_vggm_layers_and_shapes_match_the_prototxt():
    net = VGGM()
    convs = {n: m for n, m in net.features.named_children() if isinstance(m, torch.nn.Conv2d)}
    assert [(n, c.out_channels, c.in_channels, c.kernel_size[0]) for n, c in convs.items()] == PROTOTXT[:5]
    assert [(c.stride[0], c.padding[0]) for c in convs.values()] == [(2, 0), (2, 1), (1, 1), (1, 1), (1, 1)]
    names = [n for n, _ in net.features.named_children()]
    assert names == ['conv1', 'relu1', 'norm1', 'pool1', 'conv2', 'relu2', 'norm2', 'pool2', 'conv3', 'relu3',
                     'conv4', 'relu4', 'conv5', 'relu5']  # no pool5
    lrn = net.features.norm1
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 0.0005, 0.75, 2.0)
    assert net.features.pool1.ceil_mode and net.features.pool1.kernel_size == 3 and net.features.pool1.stride == 2
    # conv1 frozen only (lr_mult 0 in the prototxt)
    assert {k for k, p in net.named_parameters() if not p.requires_grad} == {'features.conv1.weight',
                                                                            'features.conv1.bias'}


def test_vggm_parameter_count_is_the_known_architecture():
    net = VGGM()
    head = VGGMBBoxHead(in_channels=512, num_classes=20)
    assert sum(p.numel() for p in net.parameters()) == _params(PROTOTXT[:5]) == 6_528_640
    fcs = sum(p.numel() for p in head.shared_fcs.parameters())
    assert fcs == _params(PROTOTXT[5:]) == 79_696_896
    # + the ImageNet fc8 (1024 -> 1000): 87.25M parameters, the ~349 MB of VGG_CNN_M_1024.v2.caffemodel
    assert [tuple(fc.weight.shape) for fc in head.shared_fcs] == [(4096, 18432), (1024, 4096)]
    assert head.fc_cls.in_features == 1024 and head.fc_cls.out_features == 21
    assert head.fc_reg.in_features == 1024 and head.fc_reg.out_features == 80


@pytest.mark.parametrize('hw, out', [((224, 224), (13, 13)), ((600, 1000), (36, 61)), ((64, 96), (3, 5))])
def test_vggm_output_is_stride_16_as_in_caffe(hw, out):
    net = VGGM(channels=(4, 8, 8, 8, 16))
    feats = net(torch.zeros(1, 3, *hw))
    assert isinstance(feats, tuple) and len(feats) == 1
    assert feats[0].shape == (1, 16, *out)  # Caffe's sizes: floor convs, ceil pools
    assert all(abs(o - s / 16) <= 2 for o, s in zip(out, hw))
    assert net.out_channels == 16


def test_vggm_head_forward_and_bad_settings():
    head = VGGMBBoxHead(in_channels=8, fc6_channels=16, fc_out_channels=12, num_classes=3).eval()
    cls, reg = head(torch.randn(5, 8, 6, 6))
    assert cls.shape == (5, 4) and reg.shape == (5, 12)
    assert isinstance(head.dropout, torch.nn.Dropout) and head.dropout.p == 0.5
    with pytest.raises(ValueError, match='channels'):
        VGGM(channels=(96, 256, 512))
    with pytest.raises(ValueError, match='frozen_stages'):
        VGGM(frozen_stages=6)
    with pytest.raises(ValueError, match='fc6_channels'):
        VGGMBBoxHead(fc6_channels=0)


# ------------------------------------------------------------------------------------------------
# Caffe weights: a hand-encoded .caffemodel (protobuf wire format) through the reader, tool, initializer
# ------------------------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload) -> bytes:
    key = _varint(num << 3 | wire)
    return key + (_varint(payload) if wire == 0 else _varint(len(payload)) + payload)


def _blob(arr: np.ndarray, legacy: bool) -> bytes:
    if legacy:  # num/channels/height/width, as old Caffe files store fc weights (1 x 1 x out x in)
        dims = [1] * (4 - arr.ndim) + list(arr.shape)
        head = b''.join(_field(i + 1, 0, d) for i, d in enumerate(dims))
    else:
        head = _field(7, 2, _field(1, 2, b''.join(_varint(d) for d in arr.shape)))
    return head + _field(5, 2, arr.astype('<f4').tobytes())


def _caffemodel(layers, v1: bool) -> bytes:
    out = _field(1, 2, b'VGG_CNN_M_1024')
    for name, blobs in layers:
        if v1:  # V1LayerParameter: name 4, blobs 6; NetParameter.layers = 2
            body = _field(4, 2, name.encode()) + b''.join(_field(6, 2, _blob(b, name.startswith('fc'))) for b in blobs)
            out += _field(2, 2, body)
        else:  # LayerParameter: name 1, type 2, blobs 7; NetParameter.layer = 100
            body = _field(1, 2, name.encode()) + _field(2, 2, b'X') + b''.join(_field(7, 2, _blob(b, False))
                                                                              for b in blobs)
            out += _field(100, 2, body)
    return out


NARROW = dict(channels=(4, 8, 8, 8, 8), fc6=16, fc7=12)


def _narrow_weights(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    c = NARROW['channels']
    shapes = [('conv1', (c[0], 3, 7, 7)), ('conv2', (c[1], c[0], 5, 5)), ('conv3', (c[2], c[1], 3, 3)),
              ('conv4', (c[3], c[2], 3, 3)), ('conv5', (c[4], c[3], 3, 3)), ('fc6', (NARROW['fc6'], c[4] * 36)),
              ('fc7', (NARROW['fc7'], NARROW['fc6'])), ('fc8', (10, NARROW['fc7']))]
    layers = [(n, [rng.standard_normal(s).astype(np.float32), rng.standard_normal(s[0]).astype(np.float32)])
              for n, s in shapes]
    return [('data', [])] + layers[:1] + [('relu1', [])] + layers[1:]


@pytest.mark.parametrize('v1', [True, False])
def test_read_caffemodel_both_layer_formats(tmp_path, v1):
    layers = _narrow_weights()
    path = tmp_path / 'net.caffemodel'
    path.write_bytes(_caffemodel(layers, v1))
    got = read_caffemodel(str(path))
    assert list(got) == [n for n, b in layers if b]  # layers without blobs are left out
    for name, blobs in layers:
        for want, have in zip(blobs, got.get(name, [])):
            np.testing.assert_array_equal(have.reshape(want.shape), want)
    out = convert_vggm(got)
    assert set(out) == {f'backbone.features.conv{i}.{p}' for i in range(1, 6) for p in ('weight', 'bias')} | {
        f'roi_head.bbox_head.shared_fcs.{i}.{p}' for i in (0, 1) for p in ('weight', 'bias')}
    assert out['roi_head.bbox_head.shared_fcs.0.weight'].shape == (16, 8 * 36)  # 4-D legacy blob flattened
    bad = tmp_path / 'bad.caffemodel'
    bad.write_bytes(b'\x0a\xff\xff')
    with pytest.raises(ValueError, match='caffemodel'):
        read_caffemodel(str(bad))


def _narrow_model():
    backbone = VGGM(channels=NARROW['channels'], frozen_stages=0)
    head = VGGMBBoxHead(in_channels=8, fc6_channels=NARROW['fc6'], fc_out_channels=NARROW['fc7'], num_classes=3)
    return backbone, head


def test_converter_tool_and_initializer_load_every_tensor(tmp_path):
    layers = _narrow_weights()
    src = tmp_path / 'VGG_CNN_M_1024.v2.caffemodel'
    src.write_bytes(_caffemodel(layers, v1=True))
    spec = importlib.util.spec_from_file_location('_convert_vggm', ROOT / 'tools/convert_vggm_caffe.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    dst = tmp_path / 'out' / 'vggm1024_frcn_init.pth'
    assert tool.main([str(src), str(dst)]) == 0
    want = dict(layers)
    for checkpoint in (dst, src):  # the converted file, and the raw .caffemodel directly
        backbone, head = _narrow_model()
        VGGMPretrained('backbone', str(checkpoint))(backbone)
        VGGMPretrained('fc67', str(checkpoint))(head)
        for i in range(1, 6):
            conv = getattr(backbone.features, f'conv{i}')
            np.testing.assert_array_equal(conv.weight.detach().numpy(), want[f'conv{i}'][0])
            np.testing.assert_array_equal(conv.bias.detach().numpy(), want[f'conv{i}'][1])
        for i, name in enumerate(('fc6', 'fc7')):
            np.testing.assert_array_equal(head.shared_fcs[i].weight.detach().numpy(), want[name][0])
    # a flat conv1.weight ... dict (e.g. exported with pycaffe) converts too
    flat = {f'{n}.{p}': torch.from_numpy(b[j]) for n, b in layers if b for j, p in enumerate(('weight', 'bias'))}
    torch.save(flat, tmp_path / 'flat.pth')
    assert tool.main([str(tmp_path / 'flat.pth'), str(tmp_path / 'flat_out.pth')]) == 0


def test_missing_or_wrong_weights_fail_with_a_clear_message(tmp_path):
    backbone, head = _narrow_model()
    with pytest.raises(FileNotFoundError, match='convert_vggm_caffe.py'):
        VGGMPretrained('backbone', str(tmp_path / 'nope.pth'))(backbone)
    with pytest.raises(ValueError, match='local file'):
        VGGMPretrained('backbone', None)
    with pytest.raises(KeyError, match="'conv3.weight'"):
        convert_vggm({'conv1.weight': torch.zeros(1), 'conv1.bias': torch.zeros(1), 'conv2.weight': torch.zeros(1),
                      'conv2.bias': torch.zeros(1)})
    src = tmp_path / 'net.caffemodel'
    src.write_bytes(_caffemodel(_narrow_weights(), v1=False))
    wide = VGGM(channels=(8, 8, 8, 8, 8))
    with pytest.raises(ValueError, match='conv1.weight has shape'):
        VGGMPretrained('backbone', str(src))(wide)


# ------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------

def test_vggm_configs_exist_and_say_what_they_are():
    assert {'frcn/faster_rcnn_vggm_voc07.py', 'ohem/faster_rcnn_vggm_ohem_voc07.py',
            'ablation/faster_rcnn_vggm_voc07_bglo0_ratio.py', 'ablation/faster_rcnn_vggm_voc07_bglo0_noratio.py',
            'ablation/faster_rcnn_vggm_voc07_bglo01_noratio.py', 'ablation/faster_rcnn_vggm_voc07_n1.py',
            'ablation/faster_rcnn_vggm_voc07_allrois_n2.py', 'ablation/faster_rcnn_vggm_voc07_ohem_n1.py'} <= set(
        VGGM_CONFIGS)
    for name in VGGM_CONFIGS:
        cfg = Config.fromfile(str(ROOT / 'configs' / name))
        m = cfg.model
        assert m.backbone.type == 'VGGM' and m.backbone.frozen_stages == 1
        assert tuple(m.backbone.channels) == (96, 256, 512, 512, 512)
        assert m.roi_head.bbox_roi_extractor.roi_layer == dict(type='RoIPool', output_size=6)
        head = m.roi_head.bbox_head
        assert (head.type, head.fc6_channels, head.fc_out_channels, head.roi_feat_size, head.dropout) == (
            'VGGMBBoxHead', 4096, 1024, 6, 0.5)
        assert m.backbone.init_cfg.type == head.init_cfg.type == 'VGGMPretrained'
        assert m.backbone.init_cfg.checkpoint == head.init_cfg.checkpoint == 'checkpoints/vggm1024_frcn_init.pth'
        assert m.data_preprocessor.bgr_to_rgb is False and list(m.data_preprocessor.std) == [1.0, 1.0, 1.0]
        rcnn = m.train_cfg.rcnn
        tokens = set(Path(name).stem.split('_'))
        allrois = 'allrois' in tokens
        assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.004 if allrois else 0.001)
        ohem = 'ohem' in tokens
        bg0 = ohem or allrois or 'bglo0' in tokens
        assert rcnn.assigner.neg_iou_thr == ((0.0, 0.5) if bg0 else (0.1, 0.5))
        want = 'OHEMSampler' if ohem else 'UniformSampler' if ('noratio' in tokens or allrois) else 'RandomSampler'
        assert rcnn.sampler.type == want
        n = 1 if 'n1' in tokens else 2
        assert cfg.train_dataloader.batch_size == n
        assert rcnn.sampler.num * n == (2048 if allrois else 128)


def tiny_vggm(name: str) -> Config:
    """The real VGGM config, narrowed (same architecture), no ImageNet file, RoIAlign for the CPU."""
    from ohem_experiments.toy_vgg import shrink_vggm
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    use_roi_align(cfg)
    shrink_vggm(cfg)
    cfg.model.roi_head.bbox_head.num_classes = 5
    m = cfg.model
    assert tuple(m.backbone.channels) == (8, 16, 32, 32, 32) and m.backbone.init_cfg is None
    assert (m.rpn_head.in_channels, m.roi_head.bbox_roi_extractor.out_channels, m.roi_head.bbox_head.in_channels,
            m.roi_head.bbox_head.fc6_channels, m.roi_head.bbox_head.init_cfg) == (32, 32, 32, 64, None)
    return cfg


@pytest.mark.parametrize('name', ['frcn/faster_rcnn_vggm_voc07.py', 'ohem/faster_rcnn_vggm_ohem_voc07.py'])
def test_vggm_detector_builds_and_trains_a_step(name):
    from ohem_experiments.quick_detectors import build_detector, synthetic_batch, train_step
    cfg = tiny_vggm(name)
    assert cfg.model.roi_head.bbox_roi_extractor.roi_layer == dict(type='RoIAlign', output_size=6,
                                                                   sampling_ratio=0)
    model = build_detector(cfg)
    assert type(model.backbone).__name__ == 'VGGM' and type(model.roi_head.bbox_head).__name__ == 'VGGMBBoxHead'
    data = synthetic_batch(model, batch_size=2, size=128)
    before = copy.deepcopy(model.roi_head.bbox_head.shared_fcs[0].weight.detach())
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    logs = train_step(model, data, optim)
    assert all(np.isfinite(v) for v in logs.values()) and logs['loss'] > 0
    assert not torch.equal(before, model.roi_head.bbox_head.shared_fcs[0].weight.detach())
    assert type(model.roi_head.bbox_sampler).__name__ == cfg.model.train_cfg.rcnn.sampler.type
