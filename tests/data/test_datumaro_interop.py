"""Interoperability with the real Datumaro 1.11.1, run in its own interpreter (tests/datumaro_env.py).

Datumaro stores box coordinates as float32 rounded to 2 decimals, so the sample coordinates
have at most 2 decimals and are compared to 1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.data.formats import export_dataset, import_dataset
from tests.datumaro_env import run_datumaro

pytestmark = pytest.mark.slow

LABELS = ("cube", "Sphere", "traffic light")
INFOS = {"purpose": "noisy_label_detection", "params": {"epochs": [1, 2, 3]}}

# (subset, item id, image size (w, h), item attributes, boxes as (ann id, label, x, y, w, h, attributes))
SPEC: list[tuple[str, str, tuple[int, int], dict[str, Any], list[tuple]]] = [
    ("train", "Img_A", (64, 48), {"frame": 3}, [
        (11, 0, 3.25, 4.5, 10.12, 7.75, {"iters": [0, 10, 20], "loss_dynamics_cls": [0.5, 0.25, 0.125]}),
        (12, 2, 40.0, 30.0, 24.0, 18.0, {"iters": [0, 10, 20], "loss_dynamics_cls": [1.5, 0.75, 0.0]}),
    ]),
    ("train", "sub/b.2", (40, 30), {}, [(13, 1, 0.0, 0.0, 5.5, 6.25, {"note": "é"})]),
    ("val", "Img_A", (50, 20), {"tags": ["x", "y"]}, [(7, 1, 10.0, 2.0, 20.0, 10.0, {})]),
    ("val", "no_boxes", (32, 32), {}, []),
]

# Prints what Datumaro loaded, as JSON on the last stdout line.
READ_SCRIPT = """
import json, sys
import datumaro as dm
from datumaro.components.annotation import AnnotationType

ds = dm.Dataset.import_from(sys.argv[1], sys.argv[2])
label_cat = ds.categories()[AnnotationType.label]
items = []
for item in ds:
    media = item.media
    items.append({
        "id": item.id, "subset": item.subset, "attributes": item.attributes,
        "path": getattr(media, "path", None),
        "size": list(media.size) if media is not None and media.size is not None else None,
        "boxes": [{"id": a.id, "label": label_cat[a.label].name, "bbox": [float(v) for v in a.get_bbox()],
                   "attributes": a.attributes}
                  for a in item.annotations if a.type == AnnotationType.bbox],
    })
print(json.dumps({"labels": [c.name for c in label_cat], "infos": ds.infos(), "items": items}))
"""

# Builds SPEC (passed as JSON) with Datumaro and exports it in the given format.
WRITE_SCRIPT = """
import json, sys
import datumaro as dm
from datumaro.components.annotation import Bbox
from datumaro.components.media import Image

out, fmt, spec_json = sys.argv[1:4]
spec = json.loads(spec_json)
items = [
    dm.DatasetItem(id=it["id"], subset=it["subset"], media=Image.from_file(path=it["path"]),
                   attributes=it["attributes"],
                   annotations=[Bbox(*b["bbox"], label=b["label"], id=b["id"], attributes=b["attributes"])
                                for b in it["boxes"]])
    for it in spec["items"]
]
ds = dm.Dataset.from_iterable(items, infos=spec["infos"], categories=spec["labels"])
ds.export(out, fmt, save_media=True)
"""


def sample(image_dir: Path) -> Dataset:
    items = []
    for n, (subset, item_id, size, attrs, boxes) in enumerate(SPEC):
        path = image_dir / subset / f"{item_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (10 * n, 100, 200)).save(path)
        item_boxes = tuple(Box(x, y, w, h, label, ann_id, box_attrs)
                           for ann_id, label, x, y, w, h, box_attrs in boxes)
        items.append(Item(item_id, subset, path, *size, item_boxes, attrs))
    return Dataset(tuple(items), LABELS, INFOS)


def datumaro_load(path: Path, fmt: str) -> dict[str, Any]:
    proc = run_datumaro(READ_SCRIPT, path, fmt)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def boxes_by_item(items: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[str, list[float]]]]:
    return {(it["subset"], it["id"]): [(b["label"], b["bbox"]) for b in it["boxes"]] for it in items}


def expected_boxes(dataset: Dataset) -> dict[tuple[str, str], list[tuple[str, list[float]]]]:
    return {item.key: [(dataset.labels[b.label], list(b.xywh)) for b in item.boxes] for item in dataset}


def assert_boxes_match(actual: dict, expected: dict, *, ordered: bool = True) -> None:
    assert sorted(actual) == sorted(expected)
    for key, boxes in expected.items():
        if not ordered:
            actual[key], boxes = sorted(actual[key]), sorted(boxes)
        assert [label for label, _ in actual[key]] == [label for label, _ in boxes], key
        for (_, a), (_, e) in zip(actual[key], boxes, strict=True):
            assert a == pytest.approx(e, abs=1e-3), key


@pytest.mark.parametrize("save_media", [True, False], ids=["with-media", "without-media"])
def test_datumaro_reads_our_datumaro_export(tmp_path: Path, save_media: bool) -> None:
    source = sample(tmp_path / "src")
    out = export_dataset(source, tmp_path / "out", "datumaro", save_media=save_media)
    loaded = datumaro_load(out, "datumaro")

    assert loaded["labels"] == list(LABELS)
    assert loaded["infos"] == INFOS
    assert_boxes_match(boxes_by_item(loaded["items"]), expected_boxes(source))
    by_key = {(it["subset"], it["id"]): it for it in loaded["items"]}
    for item in source:
        got = by_key[item.key]
        assert got["attributes"] == dict(item.attributes)
        assert got["size"] == [item.height, item.width]
        assert [b["id"] for b in got["boxes"]] == [b.ann_id for b in item.boxes]
        assert [b["attributes"] for b in got["boxes"]] == [dict(b.attributes) for b in item.boxes]
        expected_path = (out / "images" / item.subset / f"{item.id}.png") if save_media else item.image_path
        assert Path(got["path"]) == expected_path
        assert Path(got["path"]).read_bytes() == item.image_path.read_bytes()


@pytest.mark.parametrize(("fmt", "dm_format"), [("coco", "coco_instances"), ("yolo", "yolo")])
def test_datumaro_reads_our_other_exports(tmp_path: Path, fmt: str, dm_format: str) -> None:
    source = sample(tmp_path / "src")
    loaded = datumaro_load(export_dataset(source, tmp_path / "out", fmt), dm_format)
    assert loaded["labels"] == list(LABELS)
    # Datumaro's COCO importer does not keep the annotation order within an image.
    assert_boxes_match(boxes_by_item(loaded["items"]), expected_boxes(source), ordered=fmt != "coco")
    if fmt == "coco":
        ann_ids = {(it["subset"], it["id"]): sorted(b["id"] for b in it["boxes"]) for it in loaded["items"]}
        assert ann_ids == {item.key: sorted(b.ann_id for b in item.boxes) for item in source}


def test_datumaro_reads_our_loose_yolo_export(tmp_path: Path) -> None:
    # Datumaro's loose-layout importer names items by file name and drops items whose annotation
    # file is empty, so this checks one flat subset where every item has boxes.
    source = sample(tmp_path / "src").subset("train")
    source = source.with_items(item.replace(id=item.id.replace("/", "_"), subset="default")
                               for item in source)
    loaded = datumaro_load(export_dataset(source, tmp_path / "out", "yolo_loose"), "yolo")
    assert loaded["labels"] == list(LABELS)
    assert_boxes_match(boxes_by_item(loaded["items"]), expected_boxes(source))


def _spec_json(source: Dataset) -> str:
    return json.dumps({
        "labels": list(source.labels), "infos": dict(source.infos),
        "items": [{"id": item.id, "subset": item.subset, "path": str(item.image_path),
                   "attributes": dict(item.attributes),
                   "boxes": [{"id": b.ann_id, "label": b.label, "bbox": list(b.xywh),
                              "attributes": dict(b.attributes)} for b in item.boxes]}
                  for item in source],
    })


def test_we_read_datumaro_datumaro_export(tmp_path: Path) -> None:
    source = sample(tmp_path / "src")
    out = tmp_path / "dm-out"
    run_datumaro(WRITE_SCRIPT, out, "datumaro", _spec_json(source))
    ours = import_dataset(out)

    assert ours.labels == LABELS
    assert dict(ours.infos) == INFOS
    assert_boxes_match(expected_boxes(ours), expected_boxes(source))
    expected = {item.key: item for item in source}
    for item in ours:
        src = expected[item.key]
        assert (item.width, item.height) == (src.width, src.height)
        assert dict(item.attributes) == dict(src.attributes)
        assert [b.ann_id for b in item.boxes] == [b.ann_id for b in src.boxes]
        assert [dict(b.attributes) for b in item.boxes] == [dict(b.attributes) for b in src.boxes]
        assert item.image_path is not None and item.image_path.is_file()
        assert item.image_path.is_relative_to(out / "images" / item.subset)


def test_we_read_datumaro_yolo_export(tmp_path: Path) -> None:
    source = sample(tmp_path / "src")
    out = tmp_path / "dm-out"
    run_datumaro(WRITE_SCRIPT, out, "yolo", _spec_json(source))
    assert (out / "obj.data").is_file()
    ours = import_dataset(out)

    assert ours.labels == LABELS
    assert ours.subsets == ("train", "val")
    # Datumaro writes 6 decimals of normalized coordinates: < 1e-3 px on these small images.
    assert_boxes_match(expected_boxes(ours), expected_boxes(source))
    # YOLO has no annotation ids: ours are 1..N in (subset, id) order.
    assert [b.ann_id for _, b in ours.iter_boxes()] == list(range(1, source.num_boxes + 1))
    assert all(item.image_path is not None and item.image_path.is_file() for item in ours)
