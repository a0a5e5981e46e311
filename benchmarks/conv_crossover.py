"""Where fastview's matrix-product weight gradient beats oneDNN's, shape by shape, on this CPU.

    python benchmarks/conv_crossover.py [--batch 256] [--rounds 5] [--steps 4] [--precision auto]

For each 3x3 "same" convolution shape (map size, input channels, filters), one training step's forward
and backward pass (gradients of the input and of the kernel) through the Conv2D layer itself (oneDNN's
kernels) and through :class:`jupyter_cifar.engine.fastview.MatmulGradConv` (the same forward pass and input
gradient, the kernel's gradient as nine matrix products), taking turns; the ratio is oneDNN's median time
over the matmuls'. ``fastview.matmul_pays`` says where the matmuls win on each kind of CPU (with AMX:
input channels x filters >= 512 x the map's pixels; AVX512-BF16 without AMX: maps of at most 64 pixels):
the "agrees" column says whether this CPU agrees. On maps of at most 25 pixels a third way is timed:
the whole convolution written out as one matrix product (:class:`jupyter_cifar.engine.fastview.
WrittenOutConv`), with ``fastview.written_out_pays``'s choice beside it. The last column is what the
trainer's probe (:mod:`jupyter_cifar.engine.convprobe`, on maps of at most 64 pixels) would pick from these
times: another way than oneDNN's only where it is at least 1.1x as fast.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import machine, table

SHAPES = [  # (map side, input channels, filters): the presets' and the ones around the rules' lines
    (15, 24, 24),
    (15, 64, 256),
    (15, 128, 128),
    (15, 128, 256),
    (7, 24, 64),
    (7, 32, 128),
    (7, 64, 64),
    (7, 64, 128),
    (7, 128, 128),
    (7, 128, 256),
    (7, 256, 256),
    (5, 128, 128),
    (3, 64, 64),
    (3, 128, 128),
    (3, 256, 256),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    import keras

    from jupyter_cifar.engine import convprobe, fastview
    from jupyter_cifar.engine.precision import resolve_precision

    policy = resolve_precision(args.precision)
    keras.config.set_dtype_policy(policy)
    print(f"3x3 convolution training steps, batch {args.batch}, {policy}; {machine()}")
    rows = []
    for side, channels, filters in SHAPES:
        ways: dict[str, convprobe.Way] = {"oneDNN": None, "matmuls": fastview.MatmulGradConv}
        if side * side <= 25:
            ways["written out"] = fastview.WrittenOutConv
        # the probe's own measurement (the trainer's: convprobe), at this benchmark's length
        shape = (side, side, channels, filters)
        median = convprobe.measure(
            shape, keras.config.dtype_policy(), ways, args.batch, args.rounds, args.steps
        )
        ratio = median["oneDNN"] / median["matmuls"]
        dtype = keras.config.dtype_policy().compute_dtype
        rule = fastview.matmul_pays(channels, filters, side * side, dtype)
        agrees = "yes" if (ratio > 1) == rule else "NO"
        written = "-"
        if "written out" in median:
            pays = fastview.written_out_pays(side * side, dtype)
            written = f"{median['oneDNN'] / median['written out']:.2f} ({'taken' if pays else 'not taken'})"
        picks = "matmuls" if rule else "oneDNN"
        small = side**4 * channels * filters <= fastview.WRITTEN_OUT_ELEMENTS  # fastview.probe_ways' cap
        offered = {name: t for name, t in median.items() if name != "written out" or small}
        probe = convprobe.pick(offered) if side * side <= convprobe.PROBE_PIXELS else "(not probed)"
        rows.append([f"{side}x{side}", f"{channels}x{filters}", f"{median['oneDNN'] * 1e3:.1f}",
                     f"{median['matmuls'] * 1e3:.1f}", f"{ratio:.2f}", picks, agrees, written,
                     probe])  # fmt: skip
        print(rows[-1], flush=True)
    header = ["map", "channels", "oneDNN ms", "matmuls ms", "oneDNN / matmuls", "the rule picks", "agrees",
              "oneDNN / written out", "the probe picks"]  # fmt: skip
    print(table(header, rows))


if __name__ == "__main__":
    main()
