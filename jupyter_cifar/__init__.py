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
    from .engine.data import CLASS_NAMES, Dataset, load_cifar10
    from .engine.images import load_image, load_images
    from .engine.modelfiles import load_model, save_model
    from .engine.nets import PRESETS, build_model
    from .engine.predict import Classification, Evaluation, classify, evaluate
    from .engine.training import TrainConfig, Trainer, TrainResult
    from .widgets import App

# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "CLASS_NAMES": "engine.data",
    "Dataset": "engine.data",
    "load_cifar10": "engine.data",
    "load_image": "engine.images",
    "load_images": "engine.images",
    "load_model": "engine.modelfiles",
    "save_model": "engine.modelfiles",
    "PRESETS": "engine.nets",
    "build_model": "engine.nets",
    "Classification": "engine.predict",
    "Evaluation": "engine.predict",
    "classify": "engine.predict",
    "evaluate": "engine.predict",
    "TrainConfig": "engine.training",
    "Trainer": "engine.training",
    "TrainResult": "engine.training",
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
