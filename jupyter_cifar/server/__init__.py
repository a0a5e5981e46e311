"""The jupyter-server extension (imports jupyter_server; nothing here imports TensorFlow)."""

from .app import CifarExtension

__all__ = ["CifarExtension"]
