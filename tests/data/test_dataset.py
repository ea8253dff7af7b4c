import math

import pytest

from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.errors import OtxNldError
from tests.factories import make_dataset


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"w": 0}, "positive"), ({"h": -1}, "positive"), ({"x": math.nan}, "finite"),
     ({"x": "1"}, "finite"), ({"label": -1}, "label"), ({"label": 1.0}, "label"),
     ({"ann_id": "3"}, "ann_id"), ({"ann_id": True}, "ann_id")],
)
def test_box_validation(kwargs, message):
    args = {"x": 1, "y": 2, "w": 3, "h": 4, "label": 0, "ann_id": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        Box(**args)


def test_box_geometry():
    box = Box(10, 20, 30, 40, 1, 7)
    assert box.xyxy == (10, 20, 40, 60) and box.area == 1200
    assert Box.from_xyxy(10, 20, 40, 60, 1, 7) == box
    assert isinstance(box.x, float)
    with pytest.raises(TypeError):
        box.attributes["k"] = 1  # frozen


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"id": ""}, "non-empty"), ({"width": 0}, "width"), ({"height": 2.5}, "height"),
     ({"subset": ""}, "subset"), ({"boxes": ("not a box",)}, "Box objects")],
)
def test_item_validation(kwargs, message):
    args = {"id": "a", "subset": "train", "image_path": None, "width": 10, "height": 10} | kwargs
    with pytest.raises(ValueError, match=message):
        Item(**args)


def test_item_ids_kept_exactly():
    item = Item("IMG_20191208_111228", "train", None, 10, 10)
    ds = Dataset((item,), ("dice1",))
    assert ds.get("IMG_20191208_111228").id == "IMG_20191208_111228"


@pytest.mark.parametrize(
    ("items", "labels", "message"),
    [((Item("a", "s", None, 9, 9), Item("a", "s", None, 9, 9)), ("x",), "duplicate item"),
     ((Item("a", "s", None, 9, 9, (Box(0, 0, 1, 1, 2, 1),)),), ("x", "y"), "only 2 labels"),
     ((), ("x", "x"), "duplicate label"),
     ((), ("x", ""), "non-empty")],
)
def test_dataset_validation(items, labels, message):
    with pytest.raises(ValueError, match=message):
        Dataset(items, labels)


def test_same_id_in_two_subsets_is_allowed_and_get_asks_for_subset():
    ds = Dataset((Item("a", "train", None, 9, 9), Item("a", "val", None, 9, 9)), ("x",))
    assert ds.get("a", "val").subset == "val"
    with pytest.raises(KeyError, match="several subsets"):
        ds.get("a")


def test_counts_and_table():
    ds = make_dataset(4, 2, subset="train")
    ds = ds.with_items([*ds.items[:3], ds.items[3].replace(subset="val")])
    counts = ds.counts()
    assert counts["train"]["items"] == 3 and counts["train"]["boxes"] == 6
    assert counts["val"]["boxes"] == 2
    assert sum(counts["train"][name] for name in ds.labels) == 6
    table = ds.counts_table().splitlines()
    assert table[0].split() == ["subset", "items", "boxes", *ds.labels]
    assert table[-1].split()[:3] == ["total", "4", "8"]


def test_subset_view_and_errors():
    ds = make_dataset(3, 1, subset="train")
    assert len(ds.subset("train")) == 3
    with pytest.raises(OtxNldError, match="no subset 'val'"):
        ds.subset("val")
