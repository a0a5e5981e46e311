"""What JAX's persistent compilation cache saves a training run under Keras' JAX backend, side by side.

    python benchmarks/jax_cache.py [--preset fast] [--images 2048] [--rounds 2] [--data DIR]

The same short run (one epoch on ``--images`` training images, the final evaluation with the preset's
test-time views on 512 test images, seed 0) in a fresh process each time, under ``KERAS_BACKEND=jax``:

- ``off``: no cache (``JAX_COMPILATION_CACHE_DIR`` empty, the way to turn it off: JAX compiles
  everything, as before);
- ``cold``: the trainer's cache (:mod:`jupyter_cifar.engine.compilecache`, ``$JUPYTER_CIFAR_CACHE/jax``)
  in an empty folder: it compiles and writes what it compiled;
- ``warm``: the same folder again: it loads.

``off`` and ``warm`` then take turns ``--rounds`` times. Each run reports the whole process's seconds
(Python, imports and the cached data load included: what a user waits for), the trainer's seconds from its
start to the first finished batch, and what JAX says of its compilations: the seconds its XLA backend
spent compiling, and cache hits and misses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, machine, print_result, run_child, table


def child(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import jax.monitoring

    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.training import TrainConfig, Trainer

    counts = {"hits": 0, "misses": 0}
    seconds = {"compiling": 0.0}

    def on_event(event: str, **_: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1
        elif event == "/jax/compilation_cache/cache_misses":
            counts["misses"] += 1

    def on_duration(event: str, duration: float, **_: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            seconds["compiling"] += duration

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    data = load_cifar10(args.data, cache_dir=args.data_cache)
    config = TrainConfig(preset=args.preset, epochs=1, train_limit=args.images, test_limit=512, seed=0)
    trainer = Trainer(data, config)
    marks: dict[str, float] = {}
    trainer.subscribe(lambda e: marks.setdefault(e["type"], time.perf_counter()))
    result = trainer.run()
    if result.evaluation is None:
        raise SystemExit(f"training failed: {result.error}")
    return {
        "first_batch_s": marks["batch"] - marks["start"],
        "trainer_s": result.seconds,
        "accuracy": result.evaluation.accuracy,
        "cache": jax.config.jax_compilation_cache_dir or "",
        **counts,
        **seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--data-cache", help=argparse.SUPPRESS)  # internal: where the decoded data is
    args = parser.parse_args()
    if args.child:
        print_result(child(args))
        return
    import jax

    from jupyter_cifar.engine.data import default_cache_dir

    print(f"JAX compilation cache, JAX {jax.__version__} on {jax.devices()[0].platform}, {machine()}")
    # Every run reads the decoded data from the usual cache, and keeps what JAX compiles in a folder of
    # its own ($JUPYTER_CIFAR_CACHE/jax in a temporary $JUPYTER_CIFAR_CACHE).
    common = ["--preset", args.preset, "--images", str(args.images), "--data", args.data,
              "--data-cache", str(default_cache_dir()), "--child"]  # fmt: skip
    with tempfile.TemporaryDirectory() as home:
        folder = os.path.join(home, "jax")
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "cold": [], "warm": []}

        def run(kind: str) -> None:
            env = {"KERAS_BACKEND": "jax", "JUPYTER_CIFAR_CACHE": home}
            if kind == "off":
                env["JAX_COMPILATION_CACHE_DIR"] = ""
            start = time.perf_counter()
            result = run_child(__file__, common, env=env)
            result["whole_s"] = time.perf_counter() - start
            runs[kind].append(result)
            print(f"  {kind}: {result['whole_s']:.1f} s whole, first batch after "
                  f"{result['first_batch_s']:.1f} s, compiling {result['compiling']:.1f} s, "
                  f"{result['hits']} hits, {result['misses']} misses", flush=True)  # fmt: skip

        run("cold")
        for _ in range(args.rounds):
            run("off")
            run("warm")
        entries = len(os.listdir(folder))
        size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    rows = [[kind, len(runs[kind]), f"{median(kind, 'whole_s'):.1f}", f"{median(kind, 'first_batch_s'):.1f}",
             f"{median(kind, 'trainer_s'):.1f}", f"{median(kind, 'compiling'):.1f}",
             f"{median(kind, 'hits'):.0f} / {median(kind, 'misses'):.0f}"]
            for kind in ("off", "cold", "warm")]  # fmt: skip
    print(f"{args.preset}, 1 epoch on {args.images} images, medians:")
    print(table(["cache", "runs", "whole s", "to first batch s", "trainer s", "XLA compiling s",
                 "hits / misses"], rows))  # fmt: skip
    print(f"warm against off: whole run {median('off', 'whole_s') / median('warm', 'whole_s'):.2f}x, "
          f"to the first batch {median('off', 'first_batch_s') / median('warm', 'first_batch_s'):.2f}x; "
          f"the cache holds {entries} entries, {size / 1e6:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
