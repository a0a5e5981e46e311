"""Train, test and keep CIFAR-10 image classifiers inside Jupyter.

Importing the package is cheap: TensorFlow, IPython and ipywidgets load only when something that needs
them is used, so a Jupyter server can load the extension without TensorFlow. The engine is importable
without Jupyter::

    from jupyter_cifar import load_cifar10, Trainer, TrainConfig, classify
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import BadParameter, DataError, ImageError, JupyterCifarError, ModelFileError

if TYPE_CHECKING:
    from .data import CLASS_NAMES, Dataset, load_cifar10
    from .images import load_image, load_images
    from .modelfiles import load_model, save_model
    from .nets import PRESETS, build_model
    from .predict import Classification, Evaluation, classify, evaluate
    from .training import TrainConfig, Trainer, TrainResult
    from .widgets import App

# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "CLASS_NAMES": "data",
    "Dataset": "data",
    "load_cifar10": "data",
    "load_image": "images",
    "load_images": "images",
    "load_model": "modelfiles",
    "save_model": "modelfiles",
    "PRESETS": "nets",
    "build_model": "nets",
    "Classification": "predict",
    "Evaluation": "predict",
    "classify": "predict",
    "evaluate": "predict",
    "TrainConfig": "training",
    "Trainer": "training",
    "TrainResult": "training",
    "App": "widgets",
}

__all__ = [
    "BadParameter",
    "DataError",
    "ImageError",
    "JupyterCifarError",
    "ModelFileError",
    "__version__",
    *_LAZY,
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_cifar``: registers ``%cifar`` (IPython and ipywidgets load only now)."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext jupyter_cifar``: removes ``%cifar`` and closes the apps it showed."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Where jupyter-server finds the extension (imported only by a server)."""
    from .server import CifarExtension

    return [{"module": "jupyter_cifar", "app": CifarExtension}]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jupyter_cifar' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
