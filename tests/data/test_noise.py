import json

import pytest

from otx_nld.data.noise import NOISE_KINDS, NoiseSpec, NoiseTruth, box_iou, synthesize_noise
from otx_nld.errors import ConfigError, DatasetError
from otx_nld.data.transforms import random_split
from tests.factories import make_dataset


@pytest.fixture
def dataset():
    return random_split(make_dataset(40, 3), {"train": 0.5, "val": 0.5}, seed=0)


def _boxes(ds):
    return {b.ann_id: (item, b) for item, b in ds.iter_boxes()}


def test_flip_changes_only_labels_of_train_boxes(dataset):
    noisy, truth = synthesize_noise(dataset, NoiseSpec(flip=4), subset="train", seed=1)
    assert truth.counts() == {"flip": 4, "shift": 0, "drop": 0, "spawn": 0}
    before, after = _boxes(dataset), _boxes(noisy)
    assert before.keys() == after.keys()
    flipped = {c.ann_id for c in truth.changes}
    for ann_id, (item, box) in after.items():
        old = before[ann_id][1]
        assert box.xywh == old.xywh
        if ann_id in flipped:
            assert item.subset == "train" and box.label != old.label
        else:
            assert box.label == old.label
    for c in truth.changes:
        assert c.original.label_id == before[c.ann_id][1].label
        assert c.noisy.label_id == after[c.ann_id][1].label


def test_shift_iou_range_and_inside_image(dataset):
    noisy, truth = synthesize_noise(dataset, NoiseSpec(shift_rate=0.3), subset="train", seed=2)
    num_train = sum(len(i.boxes) for i in dataset if i.subset == "train")
    assert truth.counts()["shift"] == round(0.3 * num_train)
    after = _boxes(noisy)
    for c in truth.changes:
        item, box = after[c.ann_id]
        orig = c.original.bbox
        iou = box_iou(box.xyxy, (orig[0], orig[1], orig[0] + orig[2], orig[1] + orig[3]))
        assert 0.4 <= iou < 0.7
        assert box.x >= 0 and box.y >= 0 and box.x + box.w <= item.width and box.y + box.h <= item.height
        assert box.label == c.original.label_id


def test_drop_removes_boxes_and_records_them(dataset):
    noisy, truth = synthesize_noise(dataset, NoiseSpec(drop=5), subset="train", seed=3)
    assert noisy.num_boxes == dataset.num_boxes - 5
    after = _boxes(noisy)
    before = _boxes(dataset)
    for c in truth.changes:
        assert c.kind == "drop" and c.ann_id not in after and c.noisy is None
        assert c.original.bbox == before[c.ann_id][1].xywh


def test_spawn_adds_non_overlapping_boxes_with_new_ids(dataset):
    noisy, truth = synthesize_noise(dataset, NoiseSpec(spawn=6), subset="train", seed=4)
    assert noisy.num_boxes == dataset.num_boxes + 6
    assert noisy.has_unique_ann_ids()
    max_before = max(b.ann_id for _, b in dataset.iter_boxes())
    after = _boxes(noisy)
    for c in truth.changes:
        assert c.kind == "spawn" and c.original is None and c.ann_id > max_before
        item, box = after[c.ann_id]
        assert c.source["item_id"] != item.id
        others = [b for b in item.boxes if b.ann_id != c.ann_id]
        assert all(box_iou(box.xyxy, o.xyxy) == 0 for o in others)
        assert 0 <= box.x and box.x + box.w <= item.width and 0 <= box.y and box.y + box.h <= item.height


def test_kinds_touch_disjoint_boxes_and_are_deterministic(dataset):
    spec = NoiseSpec(flip_rate=0.1, shift_rate=0.1, drop_rate=0.1, spawn_rate=0.1)
    noisy, truth = synthesize_noise(dataset, spec, subset="train", seed=7)
    ids = [c.ann_id for c in truth.changes]
    assert len(ids) == len(set(ids))
    assert all(c.subset == "train" for c in truth.changes)
    again, truth_again = synthesize_noise(dataset, spec, subset="train", seed=7)
    assert truth_again.as_dict() == truth.as_dict()
    assert [b.xywh for _, b in again.iter_boxes()] == [b.xywh for _, b in noisy.iter_boxes()]
    _, other = synthesize_noise(dataset, spec, subset="train", seed=8)
    assert other.as_dict()["changes"] != truth.as_dict()["changes"]


def test_truth_manifest_round_trip(dataset, tmp_path):
    _, truth = synthesize_noise(dataset, NoiseSpec(flip=2, drop=1, spawn=1, shift=1), seed=0)
    path = truth.save(tmp_path / "noise_truth.json")
    data = json.loads(path.read_text())
    assert data["counts"] == {"flip": 2, "shift": 1, "drop": 1, "spawn": 1}
    assert set(data["changes"][0]) >= {"item_id", "subset", "ann_id", "kind", "original"}
    loaded = NoiseTruth.load(path)
    assert loaded.as_dict() == truth.as_dict()
    assert loaded.keys("flip") == truth.keys("flip") and len(loaded.keys()) == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "invalid JSON"), ('{"format": "other"}', "not an otx-nld noise truth"),
     ('{"format": "otx-nld-noise-truth", "changes": [{}]}', "malformed")],
)
def test_truth_manifest_bad_files(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as info:
        NoiseTruth.load(path)
    assert "t.json" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "spec", "message"),
    [({"subset": "nope"}, NoiseSpec(flip=1), "no subset"),
     ({}, NoiseSpec(flip=10_000), "has only"),
     ({"subset": None}, NoiseSpec(flip=1), "choose one"),
     ],
)
def test_bad_noise_requests(dataset, kwargs, spec, message):
    with pytest.raises(ConfigError, match=message):
        synthesize_noise(dataset, spec, **kwargs)


@pytest.mark.parametrize("kwargs", [{"flip": 1, "flip_rate": 0.1}, {"flip": -1}, {"drop_rate": 1.5},
                                    {"shift_rate": float("nan")}])
def test_bad_noise_spec(kwargs):
    with pytest.raises(ConfigError):
        NoiseSpec(**kwargs)


def test_noise_needs_unique_ann_ids(dataset):
    clash = dataset.with_items(i.replace(boxes=tuple(b.replace(ann_id=0) for b in i.boxes)) for i in dataset)
    with pytest.raises(ConfigError, match="reindex"):
        synthesize_noise(clash, NoiseSpec(flip=1))


def test_all_kinds_listed():
    assert NOISE_KINDS == ("flip", "shift", "drop", "spawn")
