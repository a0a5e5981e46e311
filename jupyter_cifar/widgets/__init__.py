"""The notebook app's panels (ipywidgets + bqplot). Importing this loads ipywidgets, not TensorFlow."""

from .app import App

__all__ = ["App"]
