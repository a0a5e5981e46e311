"""The app: Train | Classify | Models in one widget, sharing one session."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from .classify import ClassifyPanel
from .common import STYLE
from .models import ModelsPanel
from .session import Session

TABS = ("train", "classify", "models")


class App(w.VBox):
    """``display(App())`` in a notebook (``%cifar`` does it); ``App(tab="classify")`` opens on a tab.

    ``store`` and ``data`` override where models are kept and where CIFAR-10 is (see the README's
    configuration); by default the kernel uses its Jupyter server's store and ``$JUPYTER_CIFAR_DATA``.
    """

    def __init__(
        self, *, tab: str = "train", store: str | None = None, data: str | None = None, **kwargs: Any
    ) -> None:
        from .train import TrainPanel

        super().__init__(**kwargs)
        if tab not in TABS:
            from ..errors import BadParameter

            raise BadParameter("--tab", f"{tab!r} is not a tab (choose from {', '.join(TABS)})")
        self.session = Session(store_uri=store, data=data)
        self.train = TrainPanel(self.session, shown=tab == "train")
        self.classify = ClassifyPanel(self.session)
        self.models = ModelsPanel(self.session)
        self.tabs = w.Tab(children=[self.train, self.classify, self.models])
        for i, title in enumerate(("Train", "Classify", "Models")):
            self.tabs.set_title(i, title)
        self.tabs.selected_index = TABS.index(tab)
        self.tabs.observe(self._on_tab, names="selected_index")
        title = w.HTML("<b>jupyter_cifar</b>: train, test and keep CIFAR-10 classifiers")
        self.style = w.HTML(STYLE, layout=w.Layout(height="0px", margin="0px"))  # static: no one's text
        self.children = [self.style, title, self.tabs]
        self.add_class("jc-app")
        self.train.discover_jobs()  # where the server runs jobs, Start queues them there
        if tab == "models":
            self.models.refresh()
        if tab == "classify":
            self.classify.refresh_choices()

    def _on_tab(self, change: dict[str, Any]) -> None:
        if change["new"] == TABS.index("train"):
            self.train.show()
        else:
            self.train.hide()
        if change["new"] == TABS.index("models") and self.models.page is None:
            self.models.refresh()
        if change["new"] == TABS.index("classify"):
            self.classify.refresh_choices()

    def close(self) -> None:
        """Stop any training and release the store."""
        self.train.close()
        self.session.close()
        super().close()
