"""Labelled photos wherever they are: a set in the store, or a folder with one sub-folder per class.

``--photos SET_OR_DIR`` means a folder when one exists at that path, else a set's name. Either way the
result is the photos' sources (bytes or paths, decoded later by the package's own decoder), their labels
and names, ready for evaluation or fine-tuning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.data import CLASS_NAMES
from ..errors import BadParameter, NotFound
from .records import DEFAULT_SET, check_label
from .store import PhotoStore


@dataclass(eq=False)
class LabelledPhotos:
    sources: list[bytes | Path]
    labels: np.ndarray  # (n,) int64, indices into class_names
    names: list[str]  # a file's path, or "SET/ID (FILENAME)"
    where: str  # "the folder DIR" or "the set NAME"
    class_names: tuple[str, ...] = CLASS_NAMES
    ids: list[str | None] = field(default_factory=list)  # photo ids of a set (None for files)

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, rows: Sequence[int] | np.ndarray) -> LabelledPhotos:
        rows = [int(i) for i in rows]
        return LabelledPhotos(
            [self.sources[i] for i in rows], self.labels[rows], [self.names[i] for i in rows], self.where,
            self.class_names, [self.ids[i] for i in rows] if self.ids else [],
        )  # fmt: skip

    def counts(self) -> dict[str, int]:
        found = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, found, strict=True) if n}


def folder_photos(root: str | os.PathLike[str], class_names: Sequence[str] = CLASS_NAMES) -> LabelledPhotos:
    """Photos of ``root/<class>/*``: a sub-folder named other than a class is an error naming it (a typo
    would otherwise drop a class silently), files beside the sub-folders are ignored, hidden ones too."""
    root = Path(root)
    if not root.is_dir():
        raise BadParameter("--photos", f"{root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in class_names]
    if unknown:
        raise BadParameter(
            "--photos",
            f"{root}: the sub-folder(s) {', '.join(map(repr, unknown[:5]))} are not classes; name them after "
            f"the classes: {', '.join(class_names)}",
        )
    sources: list[bytes | Path] = []
    labels, names = [], []
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            sources.append(path)
            labels.append(class_names.index(folder.name))
            names.append(str(path))
    if not sources:
        raise BadParameter("--photos", f"{root} has no photos in sub-folders named after the classes")
    return LabelledPhotos(
        sources, np.asarray(labels, np.int64), names, f"the folder {root}", tuple(class_names)
    )


def set_photos(photos: PhotoStore, name: str = DEFAULT_SET) -> LabelledPhotos:
    """Every photo of the set ``name``, oldest first; an empty or unknown set is NotFound, naming it."""
    records = photos.all(name)
    if not records:
        raise NotFound(f"the set {name!r} has no photos in {photos.display}")
    for r in records:
        check_label(r.label)
    return LabelledPhotos(
        [photos.read(r.id) for r in records],
        np.asarray([CLASS_NAMES.index(r.label) for r in records], np.int64),
        [f"{name}/{r.id} ({r.filename})" for r in records],
        f"the set {name}",
        CLASS_NAMES,
        [r.id for r in records],
    )


def resolve_photos(set_or_dir: str, store_uri: str | None) -> LabelledPhotos:
    """``--photos SET_OR_DIR``: the folder at that path if there is one, else the store's set of that
    name (the store is opened only then)."""
    if Path(set_or_dir).is_dir():
        return folder_photos(set_or_dir)
    if os.sep in set_or_dir or set_or_dir.startswith("."):
        raise BadParameter("--photos", f"{set_or_dir}: no such folder (and not a set's name)")
    from ..store import open_store
    from .store import open_photo_store

    with open_store(store_uri) as store, open_photo_store(store) as photos:
        return set_photos(photos, set_or_dir)
