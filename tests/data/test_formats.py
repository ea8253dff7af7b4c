"""Format readers and writers: round trips, detection, strict validation, atomic export."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from otx_nld.data.dataset import DEFAULT_SUBSET, Box, Dataset, Item
from otx_nld.data.formats import detect_format, export_dataset, import_dataset
from otx_nld.errors import DatasetError, OtxNldError

LABELS = ("cube", "Sphere", "traffic light")

# (item id, image extension, (width, height), boxes as (x, y, w, h, label)).
# Ids keep case, dots and subdirectories; one item has no boxes; one box touches the
# bottom-right corner exactly and one the top-left, to exercise the [0, 1] slack.
ITEM_SPECS = [
    ("Img_A", ".png", (64, 48), [(3.25, 4.5, 10.125, 7.75, 0), (40.0, 30.0, 24.0, 18.0, 2)]),
    ("b.2", ".jpg", (40, 30), [(0.0, 0.0, 5.5, 6.25, 1)]),
    ("empty", ".png", (32, 32), []),
    ("sub/dir/c", ".jpeg", (50, 20), [(10.0, 2.0, 20.0, 10.0, 1), (1.0, 1.0, 2.0, 2.0, 0),
                                      (12.5, 5.0, 7.5, 3.75, 2)]),
]


def make_image(path: Path, size: tuple[int, int], color: tuple[int, int, int] = (200, 100, 50)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def sample_dataset(image_root: Path, subsets: tuple[str, ...] = (DEFAULT_SUBSET,)) -> Dataset:
    """Items of ITEM_SPECS in each subset, with real images and ann ids 1..N in (subset, id) order."""
    items = []
    for s, subset in enumerate(subsets):
        for item_id, ext, size, _ in ITEM_SPECS:
            # A distinct colour per subset, so a swapped image would be noticed.
            path = make_image(image_root / subset / f"{item_id}{ext}", size, (200, 100, 50 + 40 * s))
            items.append(Item(item_id, subset, path, *size))
    items.sort(key=lambda item: item.key)
    boxes_of = {item_id: boxes for item_id, _, _, boxes in ITEM_SPECS}
    ann_id = 1
    out = []
    for item in items:
        boxes = []
        for x, y, w, h, label in boxes_of[item.id]:
            boxes.append(Box(x, y, w, h, label, ann_id))
            ann_id += 1
        out.append(item.replace(boxes=tuple(boxes)))
    return Dataset(tuple(out), LABELS)


def assert_same(actual: Dataset, expected: Dataset, *, ann_ids: bool = True, subsets: bool = True) -> None:
    """Same labels, items (ids exact), sizes and boxes (labels, ids, coordinates to 1e-6 relative)."""
    assert actual.labels == expected.labels

    def key(item: Item) -> tuple[str, str]:
        return (item.subset, item.id) if subsets else ("", item.id)

    exp = {key(item): item for item in expected}
    act = {key(item): item for item in actual}
    assert sorted(act) == sorted(exp)
    for k, e in exp.items():
        a = act[k]
        assert (a.width, a.height) == (e.width, e.height), k
        assert [b.label for b in a.boxes] == [b.label for b in e.boxes], k
        if ann_ids:
            assert [b.ann_id for b in a.boxes] == [b.ann_id for b in e.boxes], k
        for ab, eb in zip(a.boxes, e.boxes, strict=True):
            assert ab.xywh == pytest.approx(eb.xywh, rel=1e-6, abs=1e-9), (k, eb.ann_id)


def assert_same_media(actual: Dataset, expected: Dataset) -> None:
    """Every image was copied byte for byte (never re-encoded), extension kept."""
    exp = {item.key: item for item in expected}
    for item in actual:
        source = exp[item.key].image_path
        assert item.image_path is not None and source is not None
        assert item.image_path.suffix == source.suffix
        assert item.image_path.read_bytes() == source.read_bytes()


# -- round trips ----------------------------------------------------------------------------

DETECTED = {"yolo_loose": "yolo", "yolo": "yolo", "coco": "coco", "datumaro": "datumaro"}


@pytest.mark.parametrize(("subsets", "chain"), [
    ((DEFAULT_SUBSET,), ["yolo_loose", "coco", "datumaro", "yolo", "yolo_loose"]),
    (("train", "val"), ["coco", "datumaro", "yolo", "coco", "datumaro"]),
], ids=["one-subset", "two-subsets"])
def test_round_trip_chain_keeps_every_box(tmp_path: Path, subsets: tuple[str, ...], chain: list[str]) -> None:
    source = sample_dataset(tmp_path / "src", subsets)
    current = source
    for step, fmt in enumerate(chain):
        out = export_dataset(current, tmp_path / f"{step}-{fmt}", fmt)
        assert detect_format(out) == DETECTED[fmt]
        current = import_dataset(out)
        assert_same(current, source)
        assert_same_media(current, source)
        assert current.subsets == tuple(sorted(subsets))


@pytest.mark.parametrize("fmt", ["coco", "datumaro"])
def test_any_annotation_ids_are_kept(tmp_path: Path, fmt: str) -> None:
    source = sample_dataset(tmp_path / "src", ("train", "val"))
    scrambled = iter([907, 5, 40, 12, 6, 1000, 77, 3, 2, 8, 9, 11])
    source = source.with_items(
        item.replace(boxes=tuple(b.replace(ann_id=next(scrambled)) for b in item.boxes)) for item in source)
    back = import_dataset(export_dataset(source, tmp_path / "out", fmt))
    assert_same(back, source)


def test_yolo_numbers_boxes_in_sorted_item_order(tmp_path: Path) -> None:
    source = sample_dataset(tmp_path / "src", ("train", "val"))
    back = import_dataset(export_dataset(source, tmp_path / "out", "yolo"))
    assert [item.key for item in back] == sorted(item.key for item in source)
    assert [box.ann_id for _, box in back.iter_boxes()] == list(range(1, source.num_boxes + 1))


def test_yolo_loose_reads_into_default_subset(tmp_path: Path) -> None:
    source = sample_dataset(tmp_path / "src", ("train",))
    back = import_dataset(export_dataset(source, tmp_path / "out", "yolo_loose"))
    assert back.subsets == (DEFAULT_SUBSET,)
    assert_same(back, source, subsets=False)


def test_datumaro_keeps_infos_and_attributes(tmp_path: Path) -> None:
    source = sample_dataset(tmp_path / "src", ("train", "val"))
    infos = {"purpose": "noisy_label_detection", "nested": {"k": [1, 2.5, "x"]}, "flag": True}
    items = []
    for n, item in enumerate(source):
        boxes = tuple(b.replace(attributes={"iters": [0, 10, 20], "loss_dynamics_cls": [0.5, 0.25, 0.125 * n],
                                            "note": "é", "none": None}) for b in item.boxes)
        items.append(item.replace(boxes=boxes, attributes={"frame": n, "tags": ["a", "b"]}))
    source = Dataset(tuple(items), source.labels, infos)

    back = import_dataset(export_dataset(source, tmp_path / "out", "datumaro"))
    assert_same(back, source)
    assert dict(back.infos) == infos
    for (item, box), (src_item, src_box) in zip(back.iter_boxes(), source.iter_boxes(), strict=True):
        assert dict(item.attributes) == dict(src_item.attributes)
        assert dict(box.attributes) == dict(src_box.attributes)
    val_attributes = {item.id: dict(item.attributes) for item in back.subset("val")}
    assert val_attributes["empty"] == {"frame": 6, "tags": ["a", "b"]}


def test_coco_keeps_crowd_score_and_image_ids(tmp_path: Path) -> None:
    source = sample_dataset(tmp_path / "src")
    items = []
    for n, item in enumerate(source):
        boxes = tuple(b.replace(attributes={"is_crowd": True, "score": 0.75, "occluded": False})
                      for b in item.boxes)
        items.append(item.replace(boxes=boxes, attributes={"id": 100 + n}))
    source = source.with_items(items)
    out = export_dataset(source, tmp_path / "out", "coco")
    raw = json.loads((out / "annotations" / "instances_default.json").read_text())
    assert [c["id"] for c in raw["categories"]] == [1, 2, 3]
    assert raw["annotations"][0] | {"bbox": None} == {
        "id": 1, "image_id": 100, "category_id": 1, "bbox": None, "area": 10.125 * 7.75, "segmentation": [],
        "iscrowd": 1, "score": 0.75, "attributes": {"occluded": False}}
    back = import_dataset(out)
    assert_same(back, source)
    assert [dict(item.attributes) for item in back] == [{"id": 100 + n} for n in range(len(source))]
    assert all(dict(box.attributes) == {"is_crowd": True, "score": 0.75, "occluded": False}
               for _, box in back.iter_boxes())


def test_pycocotools_reads_our_coco(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    source = sample_dataset(tmp_path / "src", ("train", "val"))
    out = export_dataset(source, tmp_path / "out", "coco")
    coco = COCO(str(out / "annotations" / "instances_val.json"))
    assert len(coco.getImgIds()) == len(source.subset("val"))
    assert sorted(coco.getAnnIds()) == [b.ann_id for _, b in source.subset("val").iter_boxes()]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(LABELS)


@pytest.mark.parametrize("fmt", ["coco", "datumaro"])
def test_without_media_references_source_images(tmp_path: Path, fmt: str) -> None:
    source = sample_dataset(tmp_path / "src", ("train", "val"))
    out = export_dataset(source, tmp_path / "out", fmt, save_media=False)
    assert not [p for p in out.rglob("*") if p.suffix in (".png", ".jpg", ".jpeg")]
    text = "".join(p.read_text() for p in (out / "annotations").iterdir())
    assert str(source.items[0].image_path) in text
    back = import_dataset(out)
    assert_same(back, source)
    assert {item.key: item.image_path for item in back} == {item.key: item.image_path for item in source}


@pytest.mark.parametrize("fmt", ["yolo", "yolo_loose"])
def test_yolo_without_media_writes_annotations_only(tmp_path: Path, fmt: str) -> None:
    source = sample_dataset(tmp_path / "src")
    out = export_dataset(source, tmp_path / "out", fmt, save_media=False)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".png", ".jpg", ".jpeg"))]
    assert len([f for f in files if f.endswith(".txt") and "classes" not in f]) >= len(source)


def test_datumaro_item_without_image_keeps_its_size(tmp_path: Path) -> None:
    source = Dataset((Item("no_image", "train", None, 30, 20, (Box(1, 2, 3, 4, 0, 9),)),), ("a",))
    out = export_dataset(source, tmp_path / "out", "datumaro")
    raw = json.loads((out / "annotations" / "train.json").read_text())
    assert raw["items"][0]["image"] == {"size": [20, 30]}
    back = import_dataset(out)
    assert_same(back, source)
    assert back.items[0].image_path is None


def test_datumaro_image_size_from_header_when_missing(tmp_path: Path) -> None:
    source = sample_dataset(tmp_path / "src")
    out = export_dataset(source, tmp_path / "out", "datumaro")
    path = out / "annotations" / "default.json"
    raw = json.loads(path.read_text())
    for desc in raw["items"]:
        del desc["image"]["size"]
    path.write_text(json.dumps(raw))
    assert_same(import_dataset(out), source)


def test_darknet_without_prefix_and_with_crlf(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image(root / "obj_train_data" / "x.jpg", (20, 10))
    make_image(root / "obj_train_data" / "Deep" / "y.png", (20, 10))
    (root / "obj_train_data" / "x.txt").write_text("1 0.5 0.5 0.5 0.5\r\n")
    (root / "obj.names").write_text("a\r\nb\r\n")
    (root / "obj.data").write_text("# comment\r\nclasses = 2\r\ntrain = train.txt\r\nnames = obj.names\r\n")
    (root / "train.txt").write_text("obj_train_data/x.jpg\r\ndata/obj_train_data/Deep/y.png\r\n")
    ds = import_dataset(root)
    assert ds.labels == ("a", "b")
    assert [(item.subset, item.id, len(item.boxes)) for item in ds] == [("train", "Deep/y", 0),
                                                                          ("train", "x", 1)]
    assert ds.items[1].boxes[0].xywh == (5.0, 2.5, 10.0, 5.0)


def test_yolo_ann_ids_follow_sorted_items_not_file_order(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for subset, item_id in [("val", "m"), ("train", "z"), ("train", "a")]:
        make_image(root / f"obj_{subset}_data" / f"{item_id}.jpg", (10, 10))
        (root / f"obj_{subset}_data" / f"{item_id}.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.4 0.4\n")
    (root / "obj.names").write_text("a\n")
    (root / "obj.data").write_text("val = data/val.txt\ntrain = data/train.txt\nnames = data/obj.names\n")
    (root / "val.txt").write_text("data/obj_val_data/m.jpg\n")
    (root / "train.txt").write_text("data/obj_train_data/z.jpg\ndata/obj_train_data/a.jpg\n")
    ds = import_dataset(root)
    assert [(item.subset, item.id, [(b.ann_id, b.w) for b in item.boxes]) for item in ds] == [
        ("train", "a", [(1, 2.0), (2, 4.0)]),
        ("train", "z", [(3, 2.0), (4, 4.0)]),
        ("val", "m", [(5, 2.0), (6, 4.0)]),
    ]


def test_yolo_loose_names_in_either_place_and_slack(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_image(root / "Images" / "a.bmp", (100, 50))
    (root / "Annotations").mkdir(parents=True)
    # Within the 1e-6 slack: the box ends at 1.0000005.
    (root / "Annotations" / "a.txt").write_text("1 0.9 0.5 0.200001 1.0000001\n\n")
    (root / "Annotations" / "classes.txt").write_text("p\nq\n")
    (root / "classes.txt").write_text("p\nq\n")
    assert detect_format(root) == "yolo"
    ds = import_dataset(root)
    assert ds.labels == ("p", "q")
    assert ds.items[0].boxes[0].ann_id == 1


# -- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yolo_loose", "yolo", "coco", "datumaro"])
def test_detect_exported_layouts(tmp_path: Path, fmt: str) -> None:
    source = sample_dataset(tmp_path / "src")
    assert detect_format(export_dataset(source, tmp_path / "out", fmt)) == DETECTED[fmt]


@pytest.mark.parametrize(("files", "expected"), [
    ({"Annotations/a.txt": "", "Annotations/classes.txt": "x\n"}, "yolo"),
    ({"annotations/a.txt": "", "obj.names": "x\n"}, "yolo"),
    ({"obj.data": "names = obj.names\n"}, "yolo"),
    ({"annotations/instances_val.json": "{}"}, "coco"),
    ({"annotations/val.json": '{"categories": {}, "items": []}'}, "datumaro"),
    ({"annotations/val.json": '{"images": []}'}, None),
    ({"Annotations/a.txt": ""}, None),
    ({"readme.md": "hello"}, None),
])
def test_detect_format_table(tmp_path: Path, files: dict[str, str], expected: str | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    if expected is None:
        with pytest.raises(DatasetError, match="cannot detect"):
            detect_format(tmp_path)
    else:
        assert detect_format(tmp_path) == expected


# -- YOLO validation --------------------------------------------------------------------------

YOLO_NAMES = "cube\nSphere\n"


def write_yolo(root: Path, layout: str, files: dict[str, str], size: tuple[int, int] = (40, 30)) -> Path:
    """A YOLO dataset with one image per entry of ``files`` (item id -> annotation text)."""
    if layout == "loose":
        (root / "Annotations").mkdir(parents=True)
        (root / "obj.names").write_text(YOLO_NAMES)
        for item_id, text in files.items():
            (root / "Annotations" / f"{item_id}.txt").write_text(text)
            make_image(root / "Images" / f"{item_id}.jpg", size)
    else:
        data = root / "obj_train_data"
        data.mkdir(parents=True)
        (root / "obj.names").write_text(YOLO_NAMES)
        (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n"
                                       "backup = backup/\n")
        (root / "train.txt").write_text("".join(f"data/obj_train_data/{i}.jpg\n" for i in files))
        for item_id, text in files.items():
            (data / f"{item_id}.txt").write_text(text)
            make_image(data / f"{item_id}.jpg", size)
    return root


BAD_LINES = [
    ("0 0.5 0.5 0.2", "expected 5 values"),
    ("0 0.5 0.5 0.2 0.2 0.9", "expected 5 values"),
    ("0 0.5 abc 0.2 0.2", "cy 'abc' is not a number"),
    ("0 0.5 0.5 nan 0.2", "w 'nan' is not a number"),
    ("1.0 0.5 0.5 0.2 0.2", "class id '1.0' is not an integer"),
    ("cube 0.5 0.5 0.2 0.2", "is not an integer"),
    ("2 0.5 0.5 0.2 0.2", "class id 2 is out of range"),
    ("-1 0.5 0.5 0.2 0.2", "class id -1 is out of range"),
    ("0 1.5 0.5 0.2 0.2", "cx=1.5 is outside [0, 1]"),
    ("0 0.5 -0.01 0.2 0.2", "cy=-0.01 is outside [0, 1]"),
    ("0 0.5 0.5 0 0.2", "w=0 must be positive"),
    ("0 0.5 0.5 0.2 -0.2", "h=-0.2 is outside [0, 1]"),
    ("0 0.95 0.5 0.2 0.2", "outside the image horizontally"),
    ("0 0.5 0.05 0.2 0.2", "outside the image vertically"),
]


@pytest.mark.parametrize("layout", ["loose", "darknet"])
@pytest.mark.parametrize(("line", "reason"), BAD_LINES, ids=[reason for _, reason in BAD_LINES])
def test_yolo_bad_line(tmp_path: Path, layout: str, line: str, reason: str) -> None:
    files = {"b": "1 0.5 0.5 0.2 0.2\n", "x": f"0 0.5 0.5 0.2 0.2\n\n{line}\n"}
    root = write_yolo(tmp_path / "ds", layout, files)
    with pytest.raises(DatasetError) as info:
        import_dataset(root)
    assert "x.txt:3: " in str(info.value)
    assert reason in str(info.value)

    skipped: list[DatasetError] = []
    ds = import_dataset(root, skip_invalid=True, on_skip=skipped.append)
    assert [(e.path.name if e.path else None, e.line) for e in skipped] == [("x.txt", 3)]
    assert reason in str(skipped[0])
    assert [(item.id, [b.ann_id for b in item.boxes]) for item in ds] == [("b", [1]), ("x", [2])]


def _corrupt(path: Path) -> None:
    path.write_bytes(b"not an image at all")


# Each case breaks a valid dataset in one way; the error names the file (and line).
YOLO_STRUCTURE = [
    ("loose", "missing names", lambda r: (r / "obj.names").unlink(), "missing label names file"),
    ("loose", "empty names", lambda r: (r / "obj.names").write_text("\n \n"),
     "obj.names: label names file is empty"),
    ("loose", "duplicate names", lambda r: (r / "obj.names").write_text("a\n\na\n"),
     "obj.names:3: duplicate label name 'a'"),
    ("loose", "names disagree", lambda r: (r / "Annotations" / "classes.txt").write_text("cube\nball\n"),
     "differ from"),
    ("loose", "no image", lambda r: (r / "Images" / "x.jpg").unlink(), "x.txt: image missing"),
    ("loose", "corrupt image", lambda r: _corrupt(r / "Images" / "x.jpg"), "x.jpg: cannot read image"),
    ("loose", "two images", lambda r: make_image(r / "Images" / "x.png", (4, 4)),
     "several images for item 'x'"),
    ("darknet", "no image", lambda r: (r / "obj_train_data" / "x.jpg").unlink(),
     "train.txt:2: image missing"),
    ("darknet", "corrupt image", lambda r: _corrupt(r / "obj_train_data" / "x.jpg"),
     "x.jpg: cannot read image"),
    ("darknet", "missing names", lambda r: (r / "obj.names").unlink(),
     "obj.data:3: missing label names file"),
    ("darknet", "empty names", lambda r: (r / "obj.names").write_text(""),
     "obj.names: label names file is empty"),
    ("darknet", "classes mismatch",
     lambda r: (r / "obj.data").write_text("classes = 3\ntrain = data/train.txt\nnames = data/obj.names\n"),
     "obj.data:1: classes = 3 does not match"),
    ("darknet", "bad config line", lambda r: (r / "obj.data").write_text("classes = 2\nnames: obj.names\n"),
     "obj.data:2: expected 'key = value'"),
    ("darknet", "missing list", lambda r: (r / "train.txt").unlink(), "obj.data:2: missing image list file"),
    ("darknet", "duplicate list entry", lambda r: (r / "train.txt").write_text(
        "data/obj_train_data/b.jpg\nobj_train_data/b.jpg\n"), "train.txt:2: duplicate item 'b'"),
]


@pytest.mark.parametrize(("layout", "case", "breaker", "reason"), YOLO_STRUCTURE,
                         ids=[f"{layout}-{case}" for layout, case, _, _ in YOLO_STRUCTURE])
def test_yolo_structural_errors_raise_even_when_skipping(
        tmp_path: Path, layout: str, case: str, breaker: Callable[[Path], object], reason: str) -> None:
    root = write_yolo(tmp_path / "ds", layout, {"b": "1 0.5 0.5 0.2 0.2\n", "x": "0 0.5 0.5 0.2 0.2\n"})
    import_dataset(root)  # valid before breaking it
    breaker(root)
    with pytest.raises(DatasetError) as info:
        import_dataset(root, format="yolo", skip_invalid=True, on_skip=lambda e: None)
    assert reason in str(info.value)


def test_yolo_missing_annotation_file_means_no_boxes(tmp_path: Path) -> None:
    root = write_yolo(tmp_path / "ds", "loose", {"x": "0 0.5 0.5 0.2 0.2\n"})
    make_image(root / "Images" / "unlabelled.png", (8, 8))
    ds = import_dataset(root)
    assert [(item.id, len(item.boxes), item.width) for item in ds] == [("unlabelled", 0, 8), ("x", 1, 40)]


# -- COCO validation --------------------------------------------------------------------------


def coco_data() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
                   {"id": 2, "file_name": "d/b.jpg", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4]},
                        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0}],
        "categories": [{"id": 7, "name": "late"}, {"id": 3, "name": "early"}],
    }


def _set(path: list, value: object) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


_DELETE = object()

# (case, change to the valid data, message part, whether skip_invalid skips it)
COCO_CASES = [
    ("missing images", _set(["images"], _DELETE), "top level: missing key 'images'", False),
    ("missing annotations", _set(["annotations"], _DELETE), "missing key 'annotations'", False),
    ("image missing width", _set(["images", 1, "width"], _DELETE), "images[1]: missing key 'width'", False),
    ("image bad height", _set(["images", 0, "height"], 0),
     "images[0]: 'height' must be a positive integer", False),
    ("duplicate image id", _set(["images", 1, "id"], 1), "images[1]: duplicate image id 1", False),
    ("duplicate category", _set(["categories", 1, "id"], 7), "categories[1]: duplicate category id 7", False),
    ("unknown image", _set(["annotations", 1, "image_id"], 9),
     "annotations[1] (id 2): unknown image_id 9", True),
    ("unknown category", _set(["annotations", 0, "category_id"], 1),
     "annotations[0] (id 1): unknown category_id 1", True),
    ("bbox of 3", _set(["annotations", 1, "bbox"], [1, 2, 3]),
     "annotations[1] (id 2): bbox must be 4 numbers", True),
    ("bbox string", _set(["annotations", 1, "bbox"], [1, 2, "3", 4]), "bbox must be 4 numbers", True),
    ("bbox zero w", _set(["annotations", 1, "bbox"], [1, 2, 0, 4]),
     "width and height must be positive", True),
    ("ann missing bbox", _set(["annotations", 1, "bbox"], _DELETE),
     "annotations[1] (id 2): missing key 'bbox'", True),
    ("ann id not int", _set(["annotations", 1, "id"], "x"), "'id' must be an integer", True),
]


def write_coco(root: Path, data: dict) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data, indent=1))
    return root


def test_coco_valid_sample(tmp_path: Path) -> None:
    ds = import_dataset(write_coco(tmp_path / "ds", coco_data()))
    assert ds.labels == ("early", "late")  # ordered by category id
    assert [(item.id, item.subset, [b.label for b in item.boxes]) for item in ds] == [
        ("a", "train", [1]), ("d/b", "train", [0])]
    assert ds.items[0].image_path == tmp_path / "ds" / "images" / "train" / "a.jpg"


@pytest.mark.parametrize(("case", "change", "reason", "skippable"), COCO_CASES,
                         ids=[c[0] for c in COCO_CASES])
def test_coco_errors(tmp_path: Path, case: str, change: Callable[[dict], None], reason: str,
                     skippable: bool) -> None:
    data = copy.deepcopy(coco_data())
    change(data)
    root = write_coco(tmp_path / "ds", data)
    with pytest.raises(DatasetError) as info:
        import_dataset(root)
    assert "instances_train.json: " in str(info.value)
    assert reason in str(info.value)
    skipped: list[DatasetError] = []
    if skippable:
        ds = import_dataset(root, skip_invalid=True, on_skip=skipped.append)
        assert len(skipped) == 1 and reason in str(skipped[0])
        assert ds.num_boxes == 1
    else:
        with pytest.raises(DatasetError, match=r"instances_train\.json"):
            import_dataset(root, skip_invalid=True, on_skip=skipped.append)


def test_coco_invalid_json_names_line(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val.json").write_text('{\n  "images": [],\n  "annotations": [,]\n}\n')
    with pytest.raises(DatasetError, match=r"instances_val\.json:3: invalid JSON"):
        import_dataset(root, skip_invalid=True)


# -- Datumaro validation ----------------------------------------------------------------------


def datumaro_data() -> dict:
    return {
        "dm_format_version": "1.0", "media_type": 2, "infos": {"k": 1},
        "categories": {"label": {"labels": [{"name": "a", "parent": "", "attributes": []},
                                            {"name": "b", "parent": "", "attributes": []}],
                                 "attributes": []}},
        "items": [
            {"id": "i1", "annotations": [{"id": 4, "type": "bbox", "label_id": 1, "bbox": [1, 2, 3, 4],
                                          "attributes": {}, "group": 0, "z_order": 0}],
             "image": {"path": "i1.jpg", "size": [30, 40]}},
            {"id": "i2", "annotations": [{"id": 5, "type": "bbox", "label_id": 0, "bbox": [1, 2, 3, 4]},
                                         {"id": 6, "type": "label", "label_id": 0}],
             "attr": {"x": 1}, "image": {"size": [30, 40]}},
        ],
    }


DATUMARO_CASES = [
    ("missing items", _set(["items"], _DELETE), "top level: missing key 'items'", False),
    ("version", _set(["dm_format_version"], "9.9"), "unsupported dm_format_version '9.9'", False),
    ("media type", _set(["media_type"], 6), "unsupported media_type 6", False),
    ("duplicate item", _set(["items", 1, "id"], "i1"), "items[1] (id 'i1'): duplicate item id", False),
    ("no size no file", _set(["items", 1, "image"], {}), "items[1] (id 'i2'): image has no 'size'", False),
    ("no size, missing file", _set(["items", 0, "image", "size"], _DELETE),
     "items[0] (id 'i1'): image has no 'size' and no readable file", False),
    ("bad size", _set(["items", 0, "image", "size"], [30]),
     "items[0] (id 'i1'): image 'size' must be", False),
    ("label out of range", _set(["items", 0, "annotations", 0, "label_id"], 2),
     "items[0] (id 'i1') annotations[0] (id 4): label_id 2 is not one of the 2 labels", True),
    ("bbox bad", _set(["items", 1, "annotations", 0, "bbox"], [1, 2, 3]),
     "items[1] (id 'i2') annotations[0] (id 5): bbox must be 4 numbers", True),
    ("bbox negative", _set(["items", 1, "annotations", 0, "bbox"], [1, 2, -3, 4]), "must be positive", True),
    ("no ann id", _set(["items", 1, "annotations", 0, "id"], _DELETE), "missing key 'id'", True),
]


def write_datumaro(root: Path, data: dict) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.json").write_text(json.dumps(data, indent=1))
    return root


def test_datumaro_valid_sample(tmp_path: Path) -> None:
    ds = import_dataset(write_datumaro(tmp_path / "ds", datumaro_data()))
    assert ds.labels == ("a", "b") and dict(ds.infos) == {"k": 1}
    assert [(item.id, item.width, item.height, [b.ann_id for b in item.boxes], dict(item.attributes))
            for item in ds] == [("i1", 40, 30, [4], {}), ("i2", 40, 30, [5], {"x": 1})]
    assert ds.items[1].image_path is None


@pytest.mark.parametrize(("case", "change", "reason", "skippable"), DATUMARO_CASES,
                         ids=[c[0] for c in DATUMARO_CASES])
def test_datumaro_errors(tmp_path: Path, case: str, change: Callable[[dict], None], reason: str,
                         skippable: bool) -> None:
    data = copy.deepcopy(datumaro_data())
    change(data)
    root = write_datumaro(tmp_path / "ds", data)
    with pytest.raises(DatasetError) as info:
        import_dataset(root, format="datumaro")
    assert "train.json: " in str(info.value)
    assert reason in str(info.value)
    skipped: list[DatasetError] = []
    if skippable:
        ds = import_dataset(root, format="datumaro", skip_invalid=True, on_skip=skipped.append)
        assert len(skipped) == 1 and reason in str(skipped[0])
        assert ds.num_boxes == 1
    else:
        with pytest.raises(DatasetError, match=r"train\.json"):
            import_dataset(root, format="datumaro", skip_invalid=True, on_skip=skipped.append)


@pytest.mark.parametrize("fmt", ["coco", "datumaro"])
def test_subset_files_must_agree_on_labels(tmp_path: Path, fmt: str) -> None:
    source = sample_dataset(tmp_path / "src", ("train", "val"))
    out = export_dataset(source, tmp_path / "out", fmt, save_media=False)
    path = out / "annotations" / ("instances_val.json" if fmt == "coco" else "val.json")
    data = json.loads(path.read_text())
    if fmt == "coco":
        data["categories"][0]["name"] = "renamed"
    else:
        data["categories"]["label"]["labels"][0]["name"] = "renamed"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"val\.json: .*differ from .* in (instances_)?train\.json"):
        import_dataset(out)


def test_datumaro_invalid_json_names_line(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "val.json").write_text('{"dm_format_version": "1.0",\n"items": [\n}\n')
    with pytest.raises(DatasetError, match=r"val\.json:3: invalid JSON"):
        import_dataset(root)


# -- writing ----------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("fmt", ["yolo_loose", "yolo", "coco", "datumaro"])
def test_export_into_non_empty_dir_fails_untouched(tmp_path: Path, fmt: str) -> None:
    source = sample_dataset(tmp_path / "src")
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    (out / "keep" / "me.txt").write_text("precious")
    before = _snapshot(out)
    with pytest.raises(OtxNldError, match="not empty"):
        export_dataset(source, out, fmt)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


@pytest.mark.parametrize("fmt", ["yolo_loose", "yolo", "coco", "datumaro"])
def test_export_failing_midway_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    source = sample_dataset(tmp_path / "src")
    missing = source.items[-1].image_path
    assert missing is not None
    missing.unlink()
    with pytest.raises(DatasetError) as info:
        export_dataset(source, tmp_path / "out", fmt)
    assert missing.name in str(info.value) and "does not exist" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def _one_item(box: Box, item_id: str = "a") -> Callable[[Path], Dataset]:
    return lambda root: Dataset((Item(item_id, "train", None, 40, 30, (box,)),), ("x",))


def _with_image(item_id: str) -> Callable[[Path], Dataset]:
    def build(root: Path) -> Dataset:
        path = make_image(root / "img.png", (8, 8))
        return Dataset((Item(item_id, "train", path, 8, 8, (Box(0, 0, 2, 2, 0, 1),)),), ("x",))
    return build


def _subsets(*names: str) -> Callable[[Path], Dataset]:
    return lambda root: sample_dataset(root, names)


def _same_ann_id_twice(root: Path) -> Dataset:
    items = [Item(i, "t", None, 9, 9, (Box(0, 0, 2, 2, 0, 1),)) for i in ("a", "b")]
    return Dataset(tuple(items), ("x",))


WRITE_ERRORS = [
    ("yolo_loose", _subsets("train", "val"), "export as 'yolo' (Darknet layout) or 'datumaro'"),
    ("yolo", _subsets("names"), "subset 'names' cannot be written in YOLO Darknet format"),
    ("yolo", _subsets("my-set"), "subset 'my-set' cannot be written"),
    ("yolo", _one_item(Box(30, 0, 20, 10, 0, 1)), "outside the image horizontally"),
    ("yolo_loose", _one_item(Box(0, -1, 20, 10, 0, 1)), "outside the image vertically"),
    ("yolo_loose", _one_item(Box(0, 0, 2, 2, 0, 1), item_id="classes"),
     "clashes with Annotations/classes.txt"),
    ("coco", _same_ann_id_twice, "annotation id 1 is used by items 'a' and 'b'"),
    ("coco", _one_item(Box(0, 0, 2, 2, 0, 1, {"score": "high"})), "attribute 'score' must be a number"),
    ("datumaro", _one_item(Box(0, 0, 2, 2, 0, 1, {"loss": [1.0, float("nan")]})), "non-finite number nan"),
    ("coco", _one_item(Box(0, 0, 2, 2, 0, 1), item_id="../evil"), "cannot be used as a file name"),
    ("datumaro", _with_image("a//b"), "cannot be used as a file name"),
    ("yolo", _one_item(Box(0, 0, 2, 2, 0, 1), item_id="/abs"), "cannot be used as a file name"),
]


@pytest.mark.parametrize(("fmt", "build", "reason"), WRITE_ERRORS,
                         ids=[f"{c[0]}-{c[2][:30]}" for c in WRITE_ERRORS])
def test_write_refuses_what_the_format_cannot_hold(tmp_path: Path, fmt: str, build: Callable[[Path], Dataset],
                                                   reason: str) -> None:
    with pytest.raises(OtxNldError) as info:
        export_dataset(build(tmp_path / "src"), tmp_path / "out", fmt)
    assert reason in str(info.value)
    assert not (tmp_path / "out").exists()


def test_yolo_writes_fixed_point_lines(tmp_path: Path) -> None:
    source = Dataset((Item("a", "train", None, 100000, 50000, (Box(1, 2, 3, 4, 0, 1),)),), ("x",))
    out = export_dataset(source, tmp_path / "out", "yolo", save_media=False)
    line = (out / "obj_train_data" / "a.txt").read_text()
    assert line == "0 0.000025 0.00008 0.00003 0.00008\n"
    assert (out / "obj.data").read_text() == ("classes = 1\ntrain = data/train.txt\nnames = data/obj.names\n"
                                              "backup = backup/\n")
    assert (out / "train.txt").read_text() == "data/obj_train_data/a.jpg\n"
