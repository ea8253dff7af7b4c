from collections import Counter

import pytest

from otx_nld.data.transforms import parse_splits, random_split, reindex_annotations, validate_splits
from otx_nld.errors import ConfigError
from tests.factories import make_dataset

TUTORIAL_SPLITS = [("train", 0.5), ("val", 0.2), ("test", 0.3)]


@pytest.mark.parametrize(
    ("num_items", "expected"),
    [(250, {"train": 125, "val": 50, "test": 75}),  # the tutorial's counts
     (10, {"train": 5, "val": 2, "test": 3}),
     (7, {"train": 4, "val": 1, "test": 2}),  # 3.5 / 1.4 / 2.1: largest remainder goes to train
     (1, {"train": 1})],
)
def test_random_split_sizes(num_items, expected):
    ds = random_split(make_dataset(num_items, 1), TUTORIAL_SPLITS, seed=3)
    counts = Counter(item.subset for item in ds)
    assert {k: v for k, v in counts.items() if v} == expected
    assert sorted(i.id for i in ds) == sorted(i.id for i in make_dataset(num_items, 1))


def test_random_split_is_deterministic_and_seed_dependent():
    ds = make_dataset(40, 1)
    a = [(i.id, i.subset) for i in random_split(ds, TUTORIAL_SPLITS, seed=1)]
    b = [(i.id, i.subset) for i in random_split(ds, TUTORIAL_SPLITS, seed=1)]
    c = [(i.id, i.subset) for i in random_split(ds, TUTORIAL_SPLITS, seed=2)]
    assert a == b
    assert sorted(a) != sorted(c)


def test_random_split_ignores_input_order():
    ds = make_dataset(30, 1)
    reversed_ds = ds.with_items(reversed(ds.items))
    assert sorted((i.id, i.subset) for i in random_split(ds, TUTORIAL_SPLITS, seed=5)) == \
        sorted((i.id, i.subset) for i in random_split(reversed_ds, TUTORIAL_SPLITS, seed=5))


def test_random_split_keeps_boxes():
    ds = make_dataset(12, 3)
    split = random_split(ds, {"a": 0.5, "b": 0.5})
    assert {i.id: i.boxes for i in split} == {i.id: i.boxes for i in ds}


@pytest.mark.parametrize(
    ("text", "message"),
    [("train:0.5,val:0.4", "sum to 1"),
     ("train:0.5,train:0.5", "unique"),
     ("train:abc,val:0.5", "not a number"),
     ("train=0.5", "NAME:RATIO"),
     ("train:1.5,val:-0.5", "(0, 1]"),
     ("train:0,val:1", "(0, 1]"),
     (":0.5,val:0.5", "NAME:RATIO")],
)
def test_bad_splits(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        parse_splits(text)


def test_parse_splits():
    assert parse_splits("train:0.5, val:0.2,test:0.3") == TUTORIAL_SPLITS
    assert validate_splits({"all": 1.0}) == [("all", 1.0)]


def test_reindex_annotations_unique_from_start():
    ds = make_dataset(5, 3)
    # Make ids collide, as a per-item numbering would.
    ds = ds.with_items(i.replace(boxes=tuple(b.replace(ann_id=k) for k, b in enumerate(i.boxes))) for i in ds)
    assert not ds.has_unique_ann_ids()
    out = reindex_annotations(ds, start=1)
    assert [b.ann_id for _, b in out.iter_boxes()] == list(range(1, 16))
    assert [b.xywh for _, b in out.iter_boxes()] == [b.xywh for _, b in ds.iter_boxes()]
    assert [b.ann_id for _, b in reindex_annotations(ds, start=100).iter_boxes()][0] == 100
