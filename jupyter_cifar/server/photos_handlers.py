"""REST routes of photo sets, under ``<base_url>jupyter-cifar/api/photos``.

Authenticated and translated like every route of this API (:class:`~.handlers.CifarHandler`); a photo is
JSON as :meth:`~jupyter_cifar.photos.records.PhotoRecord.to_json` writes it. ``POST photos`` takes the
photo's own bytes as the body and the rest as query arguments, so a browser or ``curl --data-binary``
sends a file as it is.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import StoreUnavailable
from ..photos.records import DEFAULT_SET, MAX_PHOTO_BYTES, check_photo_id
from ..photos.store import PhotoStore
from .handlers import API, CifarHandler, PayloadTooLarge, _int_arg


class PhotosBase(CifarHandler):
    @property
    def photos(self) -> PhotoStore:
        photos: PhotoStore | None = self.settings.get("jupyter_cifar_photos")
        if photos is None:
            raise StoreUnavailable("photo sets need the server's store to be an embedded or MongoDB store")
        return photos


class PhotosHandler(PhotosBase):
    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        photo_set = self.query_one("set")
        limit, offset = _int_arg(self, "limit", 1000), _int_arg(self, "offset", 0)
        items, total = await self.run(self.photos.list, photo_set, limit=limit, offset=offset)
        self.send_json(
            {"items": [r.to_json() for r in items], "total": total, "offset": offset, "limit": limit}
        )

    @web.authenticated
    @authorized(action="write")
    async def post(self) -> None:
        body = self.request.body
        if len(body) > MAX_PHOTO_BYTES:
            raise PayloadTooLarge(f"the photo is {len(body)} bytes; the limit is {MAX_PHOTO_BYTES} bytes")
        record = await self.run(
            self.photos.add,
            body,
            self.query_one("label") or "",
            set=self.query_one("set", DEFAULT_SET) or DEFAULT_SET,
            filename=self.query_one("filename"),
            origin=self.query_one("origin", "import") or "import",
            wrong_version=self.query_one("wrong_version"),
            predicted=self.query_one("predicted"),
        )
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{record.id}")
        self.send_json(record.to_json(), 201)


class PhotoSetsHandler(PhotosBase):
    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        self.send_json({"sets": await self.run(self.photos.sets)})


class PhotoHandler(PhotosBase):
    @web.authenticated
    @authorized(action="read")
    async def get(self, photo: str) -> None:
        record = await self.run(self.photos.get, check_photo_id(photo))
        self.send_json(record.to_json())

    @web.authenticated
    @authorized(action="write")
    async def delete(self, photo: str) -> None:
        [record] = await self.run(self.photos.remove, [check_photo_id(photo)])
        self.send_json(record.to_json())


class PhotoFileHandler(PhotosBase):
    @web.authenticated
    @authorized(action="read")
    async def get(self, photo: str) -> None:
        record = await self.run(self.photos.get, check_photo_id(photo))
        data = await self.run(self.photos.read, record.id)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="{record.id}.{record.extension}"')
        self.finish(data)


_PHOTO = r"(?P<photo>[^/]+)"


def photo_handlers() -> list[tuple[str, type[CifarHandler]]]:
    return [
        (f"{API}/photos", PhotosHandler),
        (f"{API}/photos/sets", PhotoSetsHandler),
        (f"{API}/photos/{_PHOTO}", PhotoHandler),
        (f"{API}/photos/{_PHOTO}/file", PhotoFileHandler),
    ]
