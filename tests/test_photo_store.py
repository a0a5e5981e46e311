"""Photo sets, one contract on every backend: the embedded store, a real MongoDB, a real Jupyter server."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jupyter_cifar.errors import BadParameter, ImageError, NotFound
from jupyter_cifar.photos import DEFAULT_SET, MAX_PHOTO_BYTES, PhotoStore, open_photo_store
from jupyter_cifar.store import open_store

BACKENDS = ["local", "mongo", "remote"]


@pytest.fixture(params=BACKENDS)
def photos(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        uri = str(tmp_path / "store")
    else:
        uri = request.getfixturevalue(f"{request.param}_uri")
    if request.param == "remote":  # the session's server: its photos emptied for this test
        from jupyter_cifar.photos.local import LocalPhotoStore

        with LocalPhotoStore(request.getfixturevalue("jupyter_server").store_uri) as backing:
            page, _ = backing.list(None)
            for record in page:
                backing._delete(record.id)
    with open_store(uri) as store, open_photo_store(store) as opened:
        yield opened


def jpeg(seed: int, size: tuple[int, int] = (80, 60)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), seed % 256, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_photo_keeps_its_bytes_label_origin_and_who(photos: PhotoStore) -> None:
    data = jpeg(1)
    record = photos.add(
        data, "cat", filename="IMG_0001.jpg", origin="correction", wrong_version="fast:3", predicted="dog"
    )
    assert record.set == DEFAULT_SET and record.label == "cat" and record.filename == "IMG_0001.jpg"
    assert (record.width, record.height, record.format, record.size) == (80, 60, "JPEG", len(data))
    assert record.origin == "correction" and record.wrong_version == "fast:3" and record.predicted == "dog"
    assert "@" in record.who and record.created
    assert photos.read(record.id) == data  # the original bytes, never re-encoded
    assert photos.get(record.id) == record
    assert photos.counts() == {"cat": 1}


def test_sets_are_named_listed_oldest_first_and_counted_per_label(photos: PhotoStore) -> None:
    first = photos.add(jpeg(1), "cat")
    photos.add(png(2), "dog", set="garden")
    second = photos.add(jpeg(3), "cat")
    third = photos.add(jpeg(4), "ship")
    items, total = photos.list()
    assert [r.id for r in items] == [first.id, second.id, third.id] and total == 3
    page, total = photos.list(limit=2, offset=1)
    assert [r.id for r in page] == [second.id, third.id] and total == 3
    assert photos.sets() == [
        {"name": "garden", "count": 1, "counts": {"dog": 1}},
        {"name": DEFAULT_SET, "count": 3, "counts": {"cat": 2, "ship": 1}},
    ]
    assert photos.list(None)[1] == 4
    assert [r.format for r in photos.all("garden")] == ["PNG"]


def test_the_same_photo_again_is_relabelled_not_kept_twice(photos: PhotoStore) -> None:
    data = jpeg(7)
    first = photos.add(data, "dog")
    again = photos.add(data, "cat", origin="correction", wrong_version="fast:1", predicted="dog")
    assert again.id == first.id and again.label == "cat" and again.origin == "correction"
    assert photos.counts() == {"cat": 1} and photos.list()[1] == 1
    other = photos.add(data, "dog", set="other")  # another set keeps its own
    assert other.id != first.id


def test_bad_photos_are_refused_naming_what_is_wrong_and_nothing_is_kept(photos: PhotoStore) -> None:
    kept = photos.add(jpeg(1), "cat")
    with pytest.raises(BadParameter, match=r"--label: 'kat' is not one of the classes: airplane"):
        photos.add(jpeg(2), "kat")
    with pytest.raises(ImageError, match=r"notes\.txt: .*"):
        photos.add(b"these are my notes, not a photo", "cat", filename="notes.txt")
    with pytest.raises(ImageError, match="empty"):
        photos.add(b"", "cat", filename="empty.jpg")
    with pytest.raises(BadParameter, match="--set"):
        photos.add(jpeg(3), "cat", set="../escape")
    with pytest.raises(BadParameter, match="origin"):
        photos.add(jpeg(3), "cat", origin="guess")
    # A batch with one bad photo keeps none of it.
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        photos.add_many([(jpeg(4), "dog", "a.jpg"), (jpeg(5)[:100], "dog", "broken.jpg")])
    assert [r.id for r in photos.list()[0]] == [kept.id]


def test_a_photo_over_the_limit_is_refused(photos: PhotoStore) -> None:
    big = jpeg(1) + b"\0" * (MAX_PHOTO_BYTES + 1)
    with pytest.raises(ImageError, match="MiB a photo may have"):
        photos.add(big, "cat", filename="huge.jpg")
    assert photos.list()[1] == 0


def test_remove_is_all_or_none_and_names_what_it_does_not_know(photos: PhotoStore) -> None:
    a, b = photos.add(jpeg(1), "cat"), photos.add(jpeg(2), "dog")
    c = photos.add(jpeg(3), "dog", set="garden")
    unknown = "0" * 32
    with pytest.raises(NotFound, match=unknown):
        photos.remove([a.id, unknown])
    with pytest.raises(NotFound, match="in the set 'garden'"):
        photos.remove([a.id, c.id], set=DEFAULT_SET)
    assert photos.list()[1] == 2
    with pytest.raises(BadParameter, match="not a photo id"):
        photos.get("../../etc")
    assert [r.id for r in photos.remove([a.id])] == [a.id]
    assert [r.id for r in photos.list()[0]] == [b.id]
    with pytest.raises(NotFound):
        photos.read(a.id)


def test_export_writes_an_image_folder_of_the_original_bytes(photos: PhotoStore, tmp_path: Path) -> None:
    cat, dog = photos.add(jpeg(1), "cat"), photos.add(png(2), "dog")
    assert photos.export(tmp_path / "out") == 2
    assert (tmp_path / "out" / "cat" / f"{cat.id}.jpg").read_bytes() == jpeg(1)
    assert (tmp_path / "out" / "dog" / f"{dog.id}.png").read_bytes() == png(2)
    with pytest.raises(NotFound, match="'empty' has no photos"):
        photos.export(tmp_path / "none", set="empty")


def test_two_threads_adding_the_same_photo_keep_one(photos: PhotoStore) -> None:
    data = jpeg(9)
    results: list[str] = []
    errors: list[BaseException] = []

    def add() -> None:
        try:
            results.append(photos.add(data, "frog").id)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and photos.list()[1] == 1


def test_a_fine_tuning_job_names_its_set_and_the_version_it_starts_from() -> None:
    from jupyter_cifar.jobs.records import JobSpec

    spec = JobSpec.from_json({"parent": "fast:2", "photos": "my-photos", "epochs": 3, "save": "fast-mine"})
    assert (spec.parent, spec.photos) == ("fast:2", "my-photos") and spec.to_json()["photos"] == "my-photos"
    with pytest.raises(BadParameter, match="photos: fine-tuning on a photo set needs the version"):
        JobSpec.from_json({"photos": "my-photos"})
    with pytest.raises(BadParameter, match="photos"):
        JobSpec.from_json({"parent": "fast:2", "photos": "../etc"})


def test_a_page_beyond_any_store_is_refused_naming_it(photos: PhotoStore) -> None:
    with pytest.raises(BadParameter, match="--offset"):
        photos.list(offset=2**80)
    with pytest.raises(BadParameter, match="--limit"):
        photos.list(limit=0)
