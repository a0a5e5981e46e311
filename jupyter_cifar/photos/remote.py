"""Photo sets of a running Jupyter server, through its API (a kernel of that server, or a script)."""

from __future__ import annotations

import builtins
import io
from collections.abc import Iterable, Sequence
from typing import Any

from ..data import CLASS_NAMES
from ..errors import BadParameter
from ..store.remote import RemoteModelStore
from .records import DEFAULT_SET, PhotoRecord, check_photo_id, new_record
from .store import PhotoStore


class RemotePhotoStore(PhotoStore):
    """The server checks and keeps each photo; here they are checked first too, so that a batch with a
    bad photo is refused whole before the first is sent. It borrows the model store's connection (whoever
    opened that store closes it)."""

    def __init__(self, store: RemoteModelStore) -> None:
        self.store = store
        self.display = f"the photos of {store.display}"

    def _call(self, method: str, path: str = "", **kwargs: Any) -> Any:
        return self.store._request(method, f"photos{path}", **kwargs)

    def add(
        self,
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
        if tuple(class_names) != CLASS_NAMES:
            raise BadParameter("class_names", "a Jupyter server keeps photos of CIFAR-10's classes")
        new_record(data, label, set=set, filename=filename, origin=origin, wrong_version=wrong_version,
                   predicted=predicted)  # fmt: skip
        params = [("label", label), ("set", set), ("origin", origin)]
        params += [(k, v) for k, v in (("filename", filename), ("wrong_version", wrong_version),
                                       ("predicted", predicted)) if v is not None]  # fmt: skip
        doc = self._call("POST", params=params, data=io.BytesIO(bytes(data)), size=len(data))
        return PhotoRecord.from_json(doc)

    def add_many(
        self,
        items: Iterable[tuple[bytes, str, str]],
        *,
        set: str = DEFAULT_SET,
        origin: str = "import",
        class_names: Sequence[str] = CLASS_NAMES,
    ) -> builtins.list[PhotoRecord]:
        items = builtins.list(items)
        for data, label, name in items:
            new_record(data, label, set=set, filename=name, origin=origin, class_names=class_names)
        return [self.add(d, lab, set=set, filename=n, origin=origin) for d, lab, n in items]

    def _keep(self, record: PhotoRecord, data: bytes) -> PhotoRecord:  # pragma: no cover (add is remote)
        raise NotImplementedError

    def _get(self, photo_id: str) -> PhotoRecord | None:
        return PhotoRecord.from_json(self._call("GET", f"/{photo_id}"))

    def _list(self, set: str | None, limit: int, offset: int) -> tuple[builtins.list[PhotoRecord], int]:
        params = [("limit", str(limit)), ("offset", str(offset))] + (
            [("set", set)] if set is not None else []
        )
        page = self._call("GET", params=params)
        return [PhotoRecord.from_json(d) for d in page["items"]], int(page["total"])

    def _read(self, photo_id: str) -> bytes | None:
        with self._call("GET", f"/{photo_id}/file", stream=True) as response:
            data: bytes = response.read()
        return data

    def _delete(self, photo_id: str) -> bool:
        self._call("DELETE", f"/{check_photo_id(photo_id)}")
        return True

    def _counts(self) -> dict[str, dict[str, int]]:
        return {s["name"]: dict(s["counts"]) for s in self._call("GET", "/sets")["sets"]}
