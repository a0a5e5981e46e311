"""How long loading CIFAR-10 from an image folder takes: first load (1 process, all cores), cached.

    python benchmarks/data_load.py [--data DIR]

Each first load writes to a fresh temporary cache folder, so it really decodes every image. The
page cache is not dropped: the files were probably read before, as they are in real use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jupyter_cifar.engine.data import Dataset, load_cifar10


def timed(load: Callable[[], Dataset]) -> tuple[float, Dataset]:
    start = time.perf_counter()
    ds = load()
    return time.perf_counter() - start, ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "cifar10")
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="jupyter-cifar-bench-") as tmp:

        def load(cache: str, workers: int | None = None) -> Callable[[], Dataset]:
            return lambda: load_cifar10(args.data, cache_dir=Path(tmp) / cache, workers=workers)

        t_one, ds = timed(load("one", workers=1))
        n = len(ds.x_train) + len(ds.x_test)
        t_all, _ = timed(load("all", workers=cores))
        cached = []
        for _ in range(3):
            seconds, again = timed(load("all"))
            assert again.from_cache, "the cached load did not come from the cache"
            cached.append(seconds)
        t_cached = statistics.median(cached)

    print(f"CIFAR-10 image folder {args.data}: {n} images, {cores} cores")
    print(f"{'load':<34}{'seconds':>9}{'images/s':>11}")
    rows = [
        ("first load, 1 process", t_one),
        (f"first load, {cores} processes", t_all),
        ("cached load (median of 3)", t_cached),
    ]
    for label, seconds in rows:
        print(f"{label:<34}{seconds:>9.2f}{n / seconds:>11,.0f}")
    print(f"parallel vs 1 process: {t_one / t_all:.2f}x faster")
    print(f"cached vs first load ({cores} processes): {t_all / t_cached:.1f}x faster")


if __name__ == "__main__":  # needed: decoding workers re-import this script
    main()
