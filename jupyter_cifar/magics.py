"""``%load_ext jupyter_cifar`` registers ``%cifar``; ``%unload_ext jupyter_cifar`` undoes it all."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring


@magics_class
class CifarMagics(Magics):
    """``%cifar [--tab train|classify|models] [--store URI] [--data DIR]``: show the app."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.apps: list[Any] = []

    @magic_arguments()
    @argument("--tab", default="train", choices=["train", "classify", "models"], help="the tab to open on")
    @argument("--store", default=None, help="model store URI (default: this server's store)")
    @argument("--data", default=None, help="CIFAR-10 folder (default: $JUPYTER_CIFAR_DATA)")
    @line_magic
    def cifar(self, line: str) -> Any:
        """Show the jupyter_cifar app: Train | Classify | Models."""
        args = parse_argstring(self.cifar, line)
        from .widgets import App

        app = App(tab=args.tab, store=args.store, data=args.data)
        self.apps.append(app)
        return app

    def close_apps(self) -> None:
        for app in self.apps:
            app.close()
        self.apps.clear()


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(CifarMagics)


def unload_ipython_extension(ipython: Any) -> None:
    magics = ipython.magics_manager.registry.pop("CifarMagics", None)
    if magics is not None:
        magics.close_apps()
    ipython.magics_manager.magics["line"].pop("cifar", None)
