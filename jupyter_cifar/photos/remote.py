"""Photo sets of a running Jupyter server, through its API (a kernel of that server, or a script)."""

from __future__ import annotations

import builtins
import io
from typing import Any

from ..store.remote import RemoteModelStore
from .records import PhotoRecord, check_photo_id
from .store import PhotoStore


class RemotePhotoStore(PhotoStore):
    """The server checks and keeps each photo (it takes CIFAR-10's labels); the contract checks them here
    first too. It borrows the model store's connection (whoever
    opened that store closes it)."""

    def __init__(self, store: RemoteModelStore) -> None:
        self.store = store
        self.display = f"the photos of {store.display}"

    def _call(self, method: str, path: str = "", **kwargs: Any) -> Any:
        return self.store._request(method, f"photos{path}", **kwargs)

    def _keep(self, record: PhotoRecord, data: bytes) -> PhotoRecord:
        """Send a photo the contract has checked (``add``, ``add_many``: a bad one in a batch is refused
        before the first is sent); the server checks it again and keeps it, or relabels the same bytes."""
        params = [("label", record.label), ("set", record.set), ("origin", record.origin),
                  ("filename", record.filename)]  # fmt: skip
        for key, value in (("wrong_version", record.wrong_version), ("predicted", record.predicted)):
            if value is not None:
                params.append((key, value))
        doc = self._call("POST", params=params, data=io.BytesIO(data), size=len(data))
        return PhotoRecord.from_json(doc)

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
