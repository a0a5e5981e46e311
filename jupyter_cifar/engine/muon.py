"""Muon for convolution kernels, as airbench94_muon trains them (Keller Jordan).

Each step takes SGD's (Nesterov) momentum of a kernel's gradient, seen as a matrix (one column per
filter), and replaces it by the nearest semi-orthogonal matrix, approximately, with a few Newton-Schulz
iterations: every direction of the update gets the same size, however unequal the gradient's. The kernel
is first rescaled to a fixed norm (the square root of its filter count); BatchNorm follows every such
convolution, so the scale carries no information and the learning rate alone sets how far a step turns
the kernel.

Keras' own ``keras.optimizers.Muon`` only takes 2-D variables (it hands 4-D kernels to AdamW) and does
not renormalise, so this is a small optimizer of our own, used through ``MultiOptimizer`` for the kernels
while SGD keeps the rest. It is registered with Keras' serialization, so a checkpoint's compile config
names it; a saved model needs it only to go on training (loading for inference skips the compile config).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# The quintic iteration's coefficients (airbench's and Keras' Muon): they push small singular values up
# fast, converging to roughly [0.7, 1.2] rather than exactly 1, which trains as well.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: Any, steps: int = 3, dtype: str = "float32") -> Any:
    """The Newton-Schulz approximation of ``U V^T`` for ``matrix = U S V^T`` (any 2-D shape; float32 out).

    ``dtype``: what the iterations compute in. airbench uses bfloat16: on a CPU with bfloat16 units
    (AVX512-BF16, AMX) it takes half float32's time, 0.7 % from it (a 2304x256 kernel).
    """
    a, b, c = NS_COEFFICIENTS
    rows, cols = matrix.shape
    x = ops.cast(matrix, "float32")
    if rows > cols:
        x = ops.transpose(x)
    x = ops.cast(x / (ops.sqrt(ops.sum(ops.square(x))) + 1e-7), dtype)  # every singular value <= 1
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    x = ops.cast(x, "float32")
    return ops.transpose(x) if rows > cols else x


@keras.saving.register_keras_serializable(package="jupyter_cifar")
class KernelMuon(keras.optimizers.Optimizer):
    """Muon for convolution (or dense) kernels: orthogonalized Nesterov momentum on renormalised kernels.

    ``momentum`` 0.6 and a learning rate around 0.24, decaying linearly to zero, are airbench's (at batch
    2000). ``ns_steps``: Newton-Schulz iterations (airbench: 3); ``ns_dtype``: what they compute in
    (:func:`orthogonalize`). No weight decay: the renormalisation holds the kernels' size.
    """

    def __init__(
        self,
        learning_rate: Any = 0.24,
        momentum: float = 0.6,
        nesterov: bool = True,
        ns_steps: int = 3,
        ns_dtype: str = "float32",
        name: str = "kernel_muon",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1) (got {momentum})")
        if ns_steps < 1:
            raise ValueError(f"ns_steps must be at least 1 (got {ns_steps})")
        self.momentum = momentum
        self.nesterov = nesterov
        self.ns_steps = ns_steps
        self.ns_dtype = ns_dtype

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        for v in variables:
            if len(v.shape) < 2:
                raise ValueError(f"KernelMuon trains kernels only; {v.path} has shape {tuple(v.shape)}")
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, name="momentum") for v in variables]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        m = self.momentums[self._get_variable_index(variable)]
        gradient = ops.cast(gradient, variable.dtype)
        self.assign(m, self.momentum * m + gradient)
        step = gradient + self.momentum * m if self.nesterov else m
        filters = variable.shape[-1]
        update = orthogonalize(ops.reshape(step, (-1, filters)), self.ns_steps, self.ns_dtype)
        norm = ops.sqrt(ops.sum(ops.square(variable)))
        renormalised = variable * (filters**0.5 / (norm + 1e-12))
        lr = ops.cast(learning_rate, variable.dtype)
        update = ops.reshape(ops.cast(update, variable.dtype), variable.shape)
        self.assign(variable, renormalised - lr * update)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "ns_steps": self.ns_steps,
            "ns_dtype": self.ns_dtype,
        }
