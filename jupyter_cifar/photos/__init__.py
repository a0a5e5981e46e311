"""A user's own labelled photos, kept in named sets beside the models (default ``my-photos``).

:class:`~.store.PhotoStore` is the one contract; :func:`open_photo_store` gives the backend of a model
store (its folder, its MongoDB database, or the Jupyter server it is). See ``records`` for what a photo
keeps and the checks it passes before it is kept.
"""

from .records import DEFAULT_SET, MAX_PHOTO_BYTES, PhotoRecord
from .store import PhotoStore, open_photo_store

__all__ = ["DEFAULT_SET", "MAX_PHOTO_BYTES", "PhotoRecord", "PhotoStore", "open_photo_store"]
