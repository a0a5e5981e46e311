"""How long load_image takes on the inputs it meets: dataset JPEGs, and one big phone-sized photo.

    python -m benchmarks.classify_decode [CIFAR10_DIR] [--count N]    (from the repository root)

The dataset case is compared with the plain Pillow decode (``Image.open(...).convert("RGB")``),
since load_image decodes all 60,000 dataset images in worker processes. The big photo case is
compared with decoding at full size, to show what JPEG draft mode saves.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from jupyter_cifar.engine.images import load_image

DEFAULT_DIR = Path(os.environ.get("JUPYTER_CIFAR_SHARED", Path(__file__).parents[2] / "shared"))


def per_item(seconds: float, count: int) -> str:
    return f"{seconds / count * 1e6:8.1f} us each"


def dataset(folder: Path, count: int) -> None:
    paths = sorted((folder / "train").glob("*/*.jpg"))[:count]
    if not paths:
        raise SystemExit(f"no JPEGs under {folder / 'train'}")
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            np.asarray(img.convert("RGB"))
    plain = time.perf_counter() - start
    start = time.perf_counter()
    for path in paths:
        load_image(path)
    ours = time.perf_counter() - start
    print(
        f"{len(paths)} dataset JPEGs: Pillow {per_item(plain, len(paths))}, "
        f"load_image {per_item(ours, len(paths))}"
    )


def big_photo(repeats: int = 3) -> None:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    small.resize((6000, 4000), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=85)
    data = buffer.getvalue()
    start = time.perf_counter()
    for _ in range(repeats):
        with Image.open(io.BytesIO(data)) as img:
            img.convert("RGB").resize((32, 32), Image.Resampling.LANCZOS)
    full = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        load_image(data)
    ours = time.perf_counter() - start
    print(
        f"6000x4000 JPEG: full decode + resize {full / repeats * 1e3:7.1f} ms, "
        f"load_image {ours / repeats * 1e3:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR / "cifar10")
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    dataset(args.folder, args.count)
    big_photo()


if __name__ == "__main__":
    main()
