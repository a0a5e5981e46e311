"""The exceptions jupyter_cifar raises on purpose.

Every message names what was wrong (the file, the parameter, the folder) so that it can be shown to a
person as it is: the command line prints it as one line, the panels show it in place.

    JupyterCifarError
    ├── BadParameter       a parameter has a value that cannot work (command line: exit 2)
    ├── DataError          a dataset folder or file cannot be read as CIFAR-10
    ├── ImageError         one uploaded or given image cannot be decoded
    └── ModelFileError     a file is not a model this package can load safely
"""

from __future__ import annotations


class JupyterCifarError(Exception):
    """Base class of the errors this package raises for bad input or an unavailable resource."""


class BadParameter(JupyterCifarError, ValueError):
    """A parameter has a value that cannot work; ``param`` names it as the user wrote it."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(f"{param}: {message}")


class DataError(JupyterCifarError):
    """A dataset source cannot be read; the message names the path and the problem."""


class ImageError(JupyterCifarError, ValueError):
    """One image cannot be decoded; ``name`` is the file (or a description of the source)."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")


class ModelFileError(JupyterCifarError):
    """A file is not a model this package can load, or asks to run code while loading."""
