"""The trainer's input pipeline: shuffled, augmented batches of uint8 images, prepared in numpy a whole
epoch ahead while the previous epoch trains (:class:`Batches`)."""

from __future__ import annotations

import concurrent.futures
import math
import threading

import keras
import numpy as np


class Batches(keras.utils.PyDataset):
    """Shuffled, augmented training batches from uint8 images: the input pipeline, in numpy.

    Backend-agnostic: the trainer's loop reads it one batch at a time (:mod:`jupyter_cifar.engine.loop`),
    and Keras' ``fit`` reads it like any ``PyDataset``. Each epoch is prepared as a whole with
    vectorised numpy (a permutation, one copy per translation offset, one mirrored copy), in a helper
    thread while the previous epoch trains, so the model never waits for it; batches are then views.

    ``augment``: "none"; "flip" (each image mirrored with probability 1/2, anew each epoch);
    "flip-translate" (airbench's alternating flips: a random half mirrored in the first epoch, exactly the
    other half in the next, and so on; plus a random shift of up to ``translate`` pixels each way, with
    reflected borders).

    ``color``: colour jitter as in hiverge's cifar10-speedrun (after airbench), 0 for none: each image's
    brightness shifted by up to ``color`` x 64 levels (about ``color`` standard deviations of CIFAR-10's
    pixels), then its contrast about the training set's mean colour scaled by a factor in [1 - ``color``,
    1 + ``color``], drawn anew each epoch.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        augment: str = "flip-translate",
        translate: int = 2,
        color: float = 0.0,
        seed: int = 0,
    ) -> None:
        # Read by `fit`, two threads hand out the batches (Keras' enqueuer): through TensorFlow's generator
        # dataset (the single-worker path), each new epoch stalled for about 17 s before its first batch on
        # the 2-core CPU, about a third of an `accurate` epoch; with the enqueuer it starts at once.
        super().__init__(workers=2)
        self._switch = threading.Lock()  # its threads may ask for an epoch's first batches together
        if augment not in ("none", "flip", "flip-translate"):
            raise ValueError(f"unknown augmentation {augment!r}")
        if not 0 <= color < 1:
            raise ValueError(f"colour jitter must be at least 0 and less than 1 (got {color!r})")
        self.x, self.y, self.batch_size, self.augment = x, y, batch_size, augment
        self.translate = translate if augment == "flip-translate" else 0
        self.color = color
        # The mean colour that contrast is scaled about (of at most about 5,000 images: it hardly moves).
        self._mean = x[:: max(1, len(x) // 5000)].mean(axis=(0, 1, 2), dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        self._mirror = self._rng.random(len(x)) < 0.5  # the first epoch's flips (alternating mode)
        t = self.translate
        self._padded = np.pad(x, ((0, 0), (t, t), (t, t), (0, 0)), mode="reflect") if t else x
        self._epoch = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jupyter-cifar-batches")
        self._next = self._pool.submit(self.make_epoch, 0)
        self._current: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        with self._switch:
            if self._current is None:
                self._current = self._next.result()
                self._epoch += 1
                self._next = self._pool.submit(self.make_epoch, self._epoch)
            x, y = self._current
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return x[part], y[part]

    def on_epoch_end(self) -> None:
        with self._switch:
            self._current = None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def make_epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """One epoch's images and labels, shuffled and augmented (runs in the helper thread)."""
        n, rng = len(self.x), self._rng
        order = rng.permutation(n)
        t = self.translate
        if t:
            side = self.x.shape[1]
            shifts = rng.integers(0, 2 * t + 1, size=(2, n))
            images = np.empty_like(self.x)
            for dy in range(2 * t + 1):
                for dx in range(2 * t + 1):
                    at = np.flatnonzero((shifts[0] == dy) & (shifts[1] == dx))
                    images[at] = self._padded[order[at], dy : dy + side, dx : dx + side]
        else:
            images = self.x[order]
        if self.augment == "flip":
            mirror = rng.random(n) < 0.5
        elif self.augment == "flip-translate":
            mirror = self._mirror[order] ^ bool(epoch % 2)
        else:
            mirror = None
        if mirror is not None:
            images[mirror] = images[mirror, :, ::-1]
        if self.color:
            self._jitter(images)
        return images, self.y[order]

    def _jitter(self, images: np.ndarray, chunk: int = 1024) -> None:
        """Shift each image's brightness and scale its contrast, in place (see the class): one multiply
        and one add per pixel, a chunk at a time in float32 (0.4 s an epoch of 50,000 on this CPU)."""
        n, c = len(images), self.color
        shift = self._rng.uniform(-c * 64, c * 64, (n, 1, 1, 1)).astype(np.float32)
        scale = self._rng.uniform(1 - c, 1 + c, (n, 1, 1, 1)).astype(np.float32)
        # (x - mean + shift) * scale + mean, and 0.5 so that the cast to uint8 (which truncates) rounds
        offset = (shift - self._mean) * scale + self._mean + 0.5
        out = np.empty((min(chunk, n), *images.shape[1:]), np.float32)
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            view = out[: len(images[part])]
            np.multiply(images[part], scale[part], out=view)
            view += offset[part]
            np.clip(view, 0, 255.5, out=view)
            images[part] = view
