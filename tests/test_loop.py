"""The trainer's epoch loop (engine/loop.py) keeps Keras' ``fit`` contract, and the trainer keeps the
memory a step frees for the next (engine/allocator.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from underjax import run_under_jax

from jupyter_cifar.engine.allocator import keep_freed_memory
from jupyter_cifar.engine.data import Dataset
from jupyter_cifar.engine.loop import RunningMeans, build_before_tracing, fit_batches

# Under any backend: a tiny network trained for epochs 1 and 2 (of 3) by fit and by fit_batches on the
# same fixed batches (the last one short); prints what the callbacks saw and how far apart the weights are.
SAME_AS_FIT = """
import json
import keras, numpy as np
from jupyter_cifar.engine.loop import fit_batches

class Fixed(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size, self.turns = x, y, size, 0
    def __len__(self):
        return -(-len(self.x) // self.size)
    def __getitem__(self, i):
        part = slice(i * self.size, (i + 1) * self.size)
        return self.x[part], self.y[part]
    def on_epoch_end(self):
        self.turns += 1

class Seen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []
    def on_train_begin(self, logs=None):
        self.calls.append(["train_begin"])
    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(["epoch_begin", epoch])
    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(["batch_begin", batch])
    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(["batch_end", batch, round(logs["loss"], 5), round(logs["accuracy"], 5)])
    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(["epoch_end", epoch, round(logs["loss"], 5), round(logs["accuracy"], 5)])
    def on_train_end(self, logs=None):
        self.calls.append(["train_end"])

def network():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

rng = np.random.default_rng(0)
x, y = rng.normal(size=(50, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 50)
theirs, ours = network(), network()
seen_fit, seen_ours, batches = Seen(), Seen(), Fixed(x, y, 16)
theirs.fit(Fixed(x, y, 16), epochs=3, initial_epoch=1, shuffle=False, verbose=0, callbacks=[seen_fit])
logs = fit_batches(ours, batches, epochs=3, initial_epoch=1, callbacks=[seen_ours])
apart = max(float(np.abs(a - b).max()) for a, b in zip(theirs.get_weights(), ours.get_weights()))
print(json.dumps({"fit": seen_fit.calls, "ours": seen_ours.calls, "apart": apart, "turns": batches.turns,
                  "steps": int(ours.optimizer.iterations.numpy()), "logs": logs}))
"""


def check_same_as_fit(found: dict) -> None:
    assert found["ours"] == found["fit"]  # the same hooks in the same order, the same running means
    kinds = [call[0] for call in found["ours"]]
    assert kinds.count("epoch_begin") == 2 and kinds.count("batch_end") == 8
    assert [c[1] for c in found["ours"] if c[0] == "epoch_begin"] == [1, 2]
    assert found["apart"] < 1e-5  # the same training
    assert found["turns"] == 2 and found["steps"] == 8
    assert found["logs"]["loss"] == pytest.approx(found["ours"][-2][2], abs=1e-5)  # the last epoch's means


def test_fit_batches_trains_as_fit_does() -> None:
    out: list[str] = []
    namespace: dict = {"print": out.append}
    exec(compile(SAME_AS_FIT, "same_as_fit", "exec"), namespace)
    check_same_as_fit(json.loads(out[-1]))


def test_fit_batches_trains_as_fit_does_under_jax() -> None:
    found, _ = run_under_jax(SAME_AS_FIT)
    check_same_as_fit(found)


def test_a_callback_ends_training_after_its_batch() -> None:
    """As with ``fit``: the batch in progress ends, its epoch ends (its hooks still run), no other starts."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")

    class Source:
        turns = 0

        def __len__(self) -> int:
            return 5

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            return np.full((3, 4), index, np.float32), np.zeros(3, np.int64)

        def on_epoch_end(self) -> None:
            self.turns += 1

    class StopAtSecond(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ended: list[tuple[str, int]] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.ended.append(("batch", batch))
            if batch == 1:
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.ended.append(("epoch", epoch))

    source, stopper = Source(), StopAtSecond()
    fit_batches(model, source, epochs=4, callbacks=[stopper])
    assert stopper.ended == [("batch", 0), ("batch", 1), ("epoch", 0)]
    assert int(model.optimizer.iterations.numpy()) == 2 and source.turns == 1
    fit_batches(model, source, epochs=1, callbacks=[])  # the next run starts afresh
    assert int(model.optimizer.iterations.numpy()) == 7 and not model.stop_training


def test_the_first_step_is_traced_once() -> None:
    """The optimizer's, the metrics' and the loss's variables are made before the train step is traced:
    a ``tf.function`` that makes variables is traced twice, as Keras' own ``train_on_batch`` is here."""

    def traces(first_step: Callable[[keras.Model, np.ndarray, np.ndarray], object]) -> tuple[int, int]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3),
                                  keras.layers.BatchNormalization(), keras.layers.Flatten(),
                                  keras.layers.Dense(3)])  # fmt: skip
        model.compile(optimizer=keras.optimizers.Adam(), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
        step, count = model.train_step, 0

        def counted(data: object) -> object:  # runs once for each trace of the step
            nonlocal count
            count += 1
            return step(data)

        model.train_step = counted
        x, y = np.ones((4, 6, 6, 3), np.float32), np.arange(4) % 3
        first_step(model, x, y)
        model.train_on_batch(x, y)
        return count, len(model.optimizer.variables)

    plain = traces(lambda model, x, y: model.train_on_batch(x, y))
    built = traces(lambda model, x, y: (build_before_tracing(model, x, y), model.train_on_batch(x, y)))
    assert plain[0] == 2 and built == (1, plain[1])  # the same variables, made once; one trace

    class Same:  # a batch source: the same batch twice
        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            self.batch = x, y

        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            return self.batch

        def on_epoch_end(self) -> None:
            pass

    assert traces(lambda model, x, y: fit_batches(model, Same(x, y), epochs=1)) == built  # the loop does it


def test_running_means_weigh_each_batch_by_its_size() -> None:
    means = RunningMeans()
    assert means.add({"loss": 2.0, "accuracy": 0.5}, 16) == {"loss": 2.0, "accuracy": 0.5}
    assert means.add({"loss": 1.0, "accuracy": 1.0}, 16) == {"loss": 1.5, "accuracy": 0.75}
    last = means.add({"loss": np.float32(10.0), "accuracy": 0.0}, 2)  # a short last batch counts less
    assert last["loss"] == pytest.approx((32 + 16 + 20) / 34) and last["accuracy"] == pytest.approx(24 / 34)
    assert all(type(v) is float for v in last.values())


# In a process of its own (the setting is the process's): take a 64 MiB block from malloc, touch every
# page, free it, take and touch another as big; print the page faults each cost. glibc maps such a block
# afresh each time (it is over its 32 MiB mmap threshold) unless freed memory is kept. (Through malloc
# itself: numpy asks for huge pages for its large arrays, and they fault 512 pages at a time.)
REFAULTS = """
import ctypes, json, resource, sys

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)

def block_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 * 2**20)
    ctypes.memset(block, 1, 64 * 2**20)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

said = None
if sys.argv[1] == "train":
    from jupyter_cifar.engine.allocator import keep_freed_memory
    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.training import TrainConfig, Trainer
    config = TrainConfig(preset="tutorial", epochs=1, batch_size=64, train_limit=256, test_limit=64)
    result = Trainer(load_cifar10(sys.argv[2]), config).run()
    assert result.status == "finished", result.error
    said = keep_freed_memory()
print(json.dumps({"faults": [block_faults(), block_faults()], "said": said}))
"""


def refaults(mode: str, data: Path, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", REFAULTS, mode, str(data)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_training_keeps_freed_memory_for_the_next_step(cifar10_dir: Path, cifar10: Dataset) -> None:
    """Measured through the page faults a freed block costs when it is taken again: glibc's default gives
    it back to the system and faults all its pages in again; after the trainer ran, next to none."""
    pages = 64 * 2**20 // os.sysconf("SC_PAGESIZE")  # 16,384 of 4 KiB (32 huge pages where the kernel
    first, again = refaults("alone", cifar10_dir)["faults"]  # gives a process them unasked: THP "always")
    assert first >= 32 and again >= first * 0.9
    trained = refaults("train", cifar10_dir)  # from the session's decoded cache (the fixture made it)
    assert trained["said"] == "kept: no mmap per block, no trimming"
    first, again = trained["faults"]
    assert again < pages * 0.05
    # A user's own choice for malloc stands, and says so.
    chosen = refaults("train", cifar10_dir, {"MALLOC_MMAP_MAX_": "65536"})
    assert chosen["said"] == "left alone: set by MALLOC_MMAP_MAX_"
    first, again = chosen["faults"]
    assert first >= 32 and again >= first * 0.9


def test_keep_freed_memory_says_what_it_did_here() -> None:
    said = keep_freed_memory()
    assert said.startswith(("kept:", "left alone:")), said
    assert keep_freed_memory() is said  # once per process
