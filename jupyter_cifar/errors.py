"""The exceptions jupyter_cifar raises on purpose.

Every message names what was wrong (the file, the parameter, the folder) so that it can be shown to a
person as it is: the command line prints it as one line, the panels show it in place.

    JupyterCifarError
    ├── BadParameter       a parameter has a value that cannot work (command line: exit 2)
    ├── DataError          a dataset folder or file cannot be read as CIFAR-10
    ├── ImageError         one uploaded or given image cannot be decoded
    ├── ModelFileError     a file is not a model this package can load safely
    └── StoreError         a model store operation failed
        ├── StoreUnavailable   the store cannot be reached (exit 3, HTTP 503)
        ├── NotFound           no such model, version or alias (HTTP 404)
        ├── Conflict           clashes with the store's state (HTTP 409)
        └── IntegrityError     a stored file does not match its sha256
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


class StoreError(JupyterCifarError):
    """A model store operation failed; subclasses say why."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (command line: exit 3; HTTP: 503). Names the host, never a password."""


class NotFound(StoreError, LookupError):
    """No such model, version or alias (HTTP: 404)."""


class Conflict(StoreError):
    """The request clashes with the store's state, e.g. a name that cannot be used (HTTP: 409)."""


class IntegrityError(StoreError):
    """A stored file does not match the sha256 recorded when it was saved: never a wrong model."""
