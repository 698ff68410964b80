"""The toy VOC generator: determinism, settings, hard negatives, and that mmdet reads and scores it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ohem_experiments.toy_voc import DEFAULT_CLASSES, generate_toy_voc, toy_voc_metainfo

SMALL = dict(num_trainval=6, num_test=4, image_size=80, seed=3, hard_negative_rate=0.5)


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def toy(tmp_path_factory) -> Path:
    return generate_toy_voc(tmp_path_factory.mktemp('toy'), **SMALL)


def test_layout(toy: Path):
    assert toy.name == 'VOC2007'
    for split, n in (('trainval', 6), ('test', 4)):
        ids = (toy / 'ImageSets' / 'Main' / f'{split}.txt').read_text().split()
        assert len(ids) == n
        for i in ids:
            assert (toy / 'JPEGImages' / f'{i}.jpg').read_bytes()[:2] == b'\xff\xd8'
            assert (toy / 'Annotations' / f'{i}.xml').exists()
    assert set((toy / 'ImageSets/Main/trainval.txt').read_text().split()).isdisjoint(
        (toy / 'ImageSets/Main/test.txt').read_text().split())


def test_same_seed_gives_identical_bytes(toy: Path, tmp_path: Path):
    again = generate_toy_voc(tmp_path, **SMALL)
    assert _files(again) == _files(toy)


def test_other_seed_differs(toy: Path, tmp_path: Path):
    other = generate_toy_voc(tmp_path, **dict(SMALL, seed=4))
    a, b = _files(toy), _files(other)
    assert a.keys() == b.keys()
    assert a['JPEGImages/tv000000.jpg'] != b['JPEGImages/tv000000.jpg']


def test_changing_test_count_keeps_trainval(toy: Path, tmp_path: Path):
    other = generate_toy_voc(tmp_path, **dict(SMALL, num_test=2))
    for i in range(6):
        for sub, ext in (('JPEGImages', 'jpg'), ('Annotations', 'xml')):
            assert (other / sub / f'tv{i:06d}.{ext}').read_bytes() == (toy / sub / f'tv{i:06d}.{ext}').read_bytes()


def test_identical_settings_are_skipped_and_overwrite_regenerates(tmp_path: Path):
    root = generate_toy_voc(tmp_path, **SMALL)
    jpg = root / 'JPEGImages' / 'tv000000.jpg'
    jpg.write_bytes(b'corrupted')
    manifest = root / 'toy_voc.json'
    before = manifest.stat().st_mtime_ns
    generate_toy_voc(tmp_path, **SMALL)  # same settings, all files there: nothing rewritten
    assert manifest.stat().st_mtime_ns == before and jpg.read_bytes() == b'corrupted'
    generate_toy_voc(tmp_path, overwrite=True, **SMALL)
    assert jpg.read_bytes()[:2] == b'\xff\xd8'
    jpg.unlink()  # a missing file also triggers regeneration
    generate_toy_voc(tmp_path, **SMALL)
    assert jpg.exists()


def test_hard_negative_rate_controls_hard_negatives(tmp_path: Path):
    none = generate_toy_voc(tmp_path / 'a', num_trainval=20, num_test=1, image_size=96, hard_negative_rate=0.0)
    many = generate_toy_voc(tmp_path / 'b', num_trainval=20, num_test=1, image_size=96, hard_negative_rate=1.0)
    c0 = json.loads((none / 'toy_voc.json').read_text())['counts']['trainval']
    c1 = json.loads((many / 'toy_voc.json').read_text())['counts']['trainval']
    assert c0['images_with_hard_negatives'] == 0
    assert c1['images_with_hard_negatives'] >= 18  # placement may rarely fail in a crowded image
    assert json.loads((none / 'hard_negatives.json').read_text()) == {}
    kinds = {k: c1[f'hard_{k}'] for k in ('outline', 'partial', 'lookalike', 'clutter')}
    assert sum(kinds.values()) >= 18 and sum(v > 0 for v in kinds.values()) >= 3, kinds


def test_hard_negatives_do_not_overlap_objects(tmp_path: Path):
    import xml.etree.ElementTree as ET
    root = generate_toy_voc(tmp_path, num_trainval=20, num_test=1, image_size=96, hard_negative_rate=1.0)
    hard = json.loads((root / 'hard_negatives.json').read_text())
    assert hard
    for img_id, negs in hard.items():
        objs = ET.parse(root / 'Annotations' / f'{img_id}.xml').getroot().findall('object')
        for o in objs:
            b = [int(o.find('bndbox').find(k).text) - 1 for k in ('xmin', 'ymin', 'xmax', 'ymax')]
            for n in negs:
                h = n['bbox']
                assert h[2] < b[0] or b[2] < h[0] or h[3] < b[1] or b[3] < h[1], (img_id, b, h)


@pytest.mark.parametrize('bad, match', [
    (dict(num_trainval=0), 'num_trainval'),
    (dict(num_test=-1), 'num_test'),
    (dict(image_size=10), 'image_size'),
    (dict(image_size=(96, 'x')), r'image_size\[1\]'),
    (dict(seed=-1), 'seed'),
    (dict(classes=('circle', 'blob')), "'blob'"),
    (dict(classes=()), 'classes'),
    (dict(hard_negative_rate=1.5), 'hard_negative_rate'),
])
def test_bad_settings_name_the_value(tmp_path: Path, bad: dict, match: str):
    with pytest.raises(ValueError, match=match):
        generate_toy_voc(tmp_path, **dict(SMALL, **bad))


def test_mmdet_voc_dataset_reads_it(toy: Path):
    from mmdet.datasets import VOCDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    import xml.etree.ElementTree as ET
    ds = VOCDataset(data_root=str(toy.parent), ann_file='VOC2007/ImageSets/Main/trainval.txt',
                    data_prefix=dict(sub_data_root='VOC2007/'), metainfo=toy_voc_metainfo(),
                    pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True)])
    assert ds.metainfo['dataset_type'] == 'VOC2007' and len(ds) == 6
    assert ds.metainfo['classes'] == DEFAULT_CLASSES
    for i in range(len(ds)):
        item = ds[i]
        assert item['img'].shape == (80, 80, 3)
        xml = ET.parse(toy / 'Annotations' / f"{item['img_id']}.xml").getroot()
        names = [o.find('name').text for o in xml.findall('object')]
        assert len(names) >= 1
        assert [DEFAULT_CLASSES[l] for l in item['gt_bboxes_labels']] == names
        boxes = item['gt_bboxes'].tensor.numpy()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] < 80).all() and (boxes[:, 3] < 80).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 8).all()
        # the labelled object is really drawn: its box is far from the background inside
        img = item['img'].astype(np.float32)
        for x0, y0, x1, y1 in boxes.astype(int):
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            assert img[cy, cx].max() > 150  # objects have one saturated channel; background is muted


def _voc_map(toy: Path, shift_labels: int) -> float:
    import torch
    from mmdet.datasets import VOCDataset
    from mmdet.evaluation import VOCMetric
    ds = VOCDataset(data_root=str(toy.parent), ann_file='VOC2007/ImageSets/Main/test.txt',
                    data_prefix=dict(sub_data_root='VOC2007/'), metainfo=toy_voc_metainfo(), test_mode=True,
                    pipeline=[])
    metric = VOCMetric(eval_mode='11points')
    metric.dataset_meta = ds.metainfo
    samples = []
    for info in ds:
        boxes = torch.tensor([o['bbox'] for o in info['instances']], dtype=torch.float32)
        labels = torch.tensor([o['bbox_label'] for o in info['instances']])
        samples.append(dict(gt_instances=dict(bboxes=boxes, labels=labels), ignored_instances=dict(
            bboxes=torch.zeros((0, 4)), labels=torch.zeros((0,), dtype=torch.long)),
            pred_instances=dict(bboxes=boxes, scores=torch.ones(len(labels)),
                                labels=(labels + shift_labels) % len(DEFAULT_CLASSES))))
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)['mAP']


def test_voc_metric_scores_the_annotations(toy: Path):
    """mmdet's VOCMetric on the test split: the annotations as detections score mAP 1, wrong labels 0."""
    assert _voc_map(toy, 0) > 0.99
    assert _voc_map(toy, 1) < 0.01


def test_cli_writes_the_same_data(toy: Path, tmp_path: Path):
    import importlib.util
    spec = importlib.util.spec_from_file_location('make_toy_voc', Path(__file__).parents[1] / 'tools/make_toy_voc.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = mod.main([str(tmp_path), '--num-trainval', '6', '--num-test', '4', '--image-size', '80', '--seed', '3',
                     '--preview', str(tmp_path / 'preview.png'),
                     '--hard-negative-rate', '0.5'])
    assert _files(root) == _files(toy)
    from PIL import Image
    assert Image.open(tmp_path / 'preview.png').size == (6 * 80, 80)  # all 6 trainval images in one row
    with pytest.raises(SystemExit, match='hard_negative_rate'):
        mod.main([str(tmp_path / 'x'), '--hard-negative-rate', '2'])
