"""A photo in a set: its record, and the checks every backend applies before keeping one.

A photo is a user's own labelled image: its original bytes (what was uploaded, never re-encoded), its
label, where it came from (``import`` from files, or a ``correction`` made in the Classify tab), who added
it and when, and, for a correction, the version that got it wrong and what that version answered.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..engine.data import CLASS_NAMES
from ..errors import BadParameter, ImageError
from ..store.records import check_name, now_iso, who

DEFAULT_SET = "my-photos"
ORIGINS = ("import", "correction")
# A photo is kept whole, in one record: MongoDB's documents stop at 16 MiB, and a phone's photo is a few.
MAX_PHOTO_BYTES = 15 * 1024 * 1024
MAX_FILENAME = 255
MAX_LIST = 10_000


@dataclass(frozen=True)
class PhotoRecord:
    id: str
    set: str
    label: str
    filename: str
    sha256: str
    size: int  # bytes
    width: int
    height: int
    format: str  # "JPEG", "PNG", ... as Pillow names it
    origin: str  # "import" | "correction"
    who: str
    created: str
    wrong_version: str | None = None  # the version that got it wrong (a correction)
    predicted: str | None = None  # what that version answered

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhotoRecord:
        fields: dict[str, Any] = {name: data.get(name) for name in cls.__dataclass_fields__}
        return cls(**fields)

    @property
    def extension(self) -> str:
        return _EXTENSIONS.get(self.format, self.format.lower() or "bin")


_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def check_set(name: object) -> str:
    return check_name(name, "--set")


def check_label(label: object, class_names: Sequence[str] = CLASS_NAMES) -> str:
    if not isinstance(label, str) or label not in class_names:
        shown = repr(label)[:60]
        raise BadParameter("--label", f"{shown} is not one of the classes: {', '.join(class_names)}")
    return label


def check_photo_id(photo_id: object) -> str:
    if (
        not isinstance(photo_id, str)
        or len(photo_id) != 32
        or not all(c in "0123456789abcdef" for c in photo_id)
    ):
        raise BadParameter("photo", f"{repr(photo_id)[:60]} is not a photo id (32 hexadecimal digits)")
    return photo_id


def new_record(
    data: bytes,
    label: str,
    *,
    set: str = DEFAULT_SET,
    filename: str | None = None,
    origin: str = "import",
    wrong_version: str | None = None,
    predicted: str | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> PhotoRecord:
    """The record of a photo about to be kept, once everything about it has been checked: the set's
    name, the label, the origin, and the bytes, which must be one image this package can read."""
    check_set(set)
    check_label(label, class_names)
    if origin not in ORIGINS:
        raise BadParameter("origin", f"{origin!r} is not one of: {', '.join(ORIGINS)}")
    if predicted is not None:
        check_label(predicted, class_names)
    if wrong_version is not None and (not isinstance(wrong_version, str) or len(wrong_version) > 200):
        raise BadParameter("wrong_version", "must be a model version such as fast:3")
    shown = (filename or "the photo")[:MAX_FILENAME]
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadParameter("photo", f"{shown}: expected the file's bytes")
    data = bytes(data)
    if not data:
        raise ImageError(shown, "the file is empty")
    if len(data) > MAX_PHOTO_BYTES:
        raise ImageError(
            shown, f"{len(data):,} bytes, over the {MAX_PHOTO_BYTES // 2**20} MiB a photo may have"
        )
    width, height, fmt = _inspect(data, shown)
    return PhotoRecord(
        id=uuid.uuid4().hex,
        set=set,
        label=label,
        filename=shown,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        width=width,
        height=height,
        format=fmt,
        origin=origin,
        who=who(),
        created=now_iso(),
        wrong_version=wrong_version,
        predicted=predicted,
    )


def _inspect(data: bytes, shown: str) -> tuple[int, int, str]:
    """(width, height, format) of an image the package can decode; ImageError naming it otherwise."""
    from PIL import Image

    from ..engine.images import load_image

    load_image(data, name=shown)  # the package's own decoder, with its limits: what it refuses is refused
    with Image.open(io.BytesIO(data)) as img:
        return int(img.width), int(img.height), str(img.format or "")
