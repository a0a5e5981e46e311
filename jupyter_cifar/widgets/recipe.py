"""The Train tab's form: which network, and the recipe's values it trains with.

Choosing a network fills in its preset's recipe, or the model in hand's own recipe when the model in
hand is that network (so Continue goes on as it was trained). The train-images box takes "all" or a
number, typed or chosen; "all" shows the data's count once the data is loaded (it is not loaded for
asking).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..engine.budget import MAX_MINUTES, minutes_text
from ..engine.history import epochs_done, epochs_text
from ..engine.nets import DEFAULT_PRESET, PRESETS
from ..errors import BadParameter
from .common import ErrorArea, row_layout, text_html
from .session import Session

if TYPE_CHECKING:
    from ..engine.training import TrainConfig

FAR = {"batch_size": 4.0, "learning_rate": 3.0}  # a value this many times off its recipe's is "far"
LIMIT_CHOICES = (1000, 5000, 10000, 20000)  # offered in the train-images box, after "all (50,000)"


class RecipeForm:
    """The network, epochs, batch size, learning rate and number of training images; what Start and
    Continue train with them (:meth:`config`, :meth:`continue_config`), and whether Continue can.

    ``rows`` are its two rows, for the tab to place; ``on_change`` is called after any value changes.
    Not a widget itself, like :class:`~jupyter_cifar.widgets.progress.TrainingProgress`.
    """

    def __init__(self, session: Session, errors: ErrorArea, on_change: Callable[[], None]) -> None:
        self.session = session
        self.errors = errors
        self.on_change = on_change
        preset = PRESETS[DEFAULT_PRESET]
        self.preset = w.Dropdown(
            options=[(p.name, p.name) for p in PRESETS.values()],
            value=DEFAULT_PRESET,
            description="Network",
            layout=w.Layout(width="220px"),
        )
        self.preset.add_class("jc-train-preset")
        self.preset_info = w.HTML(layout=w.Layout(flex="1 1 auto", margin="0 0 0 12px"))
        self.preset_info.add_class("jc-train-preset-info")
        self.epochs = w.BoundedIntText(preset.epochs, min=1, max=1000, description="Epochs", **_narrow())
        self.epochs.add_class("jc-train-epochs")
        self.minutes = w.BoundedFloatText(
            0.0,
            min=0.0,
            max=MAX_MINUTES,
            step=0.5,
            description="or minutes",
            tooltip="train for this long instead, the learning rate's schedule spread over it (0: for "
            "the epochs)",
            **_narrow(),
        )
        self.minutes.add_class("jc-train-minutes")
        self.batch_size = w.BoundedIntText(
            preset.batch_size, min=1, max=65536, description="Batch size", **_narrow()
        )
        self.learning_rate = w.BoundedFloatText(
            preset.learning_rate, min=1e-7, max=10.0, step=1e-4, description="Learning rate", **_narrow()
        )
        # How many training images: self.limit holds the number that config() reads (0: all of them);
        # limit_box shows it as text, 0 as "all (50,000)" (the data's count once it is loaded), never 0.
        self.limit = w.BoundedIntText(0, min=0, max=50000, description="Train images")
        self.limit_box = w.Combobox(
            value=_all_text(None),
            options=[],
            ensure_option=False,
            continuous_update=False,  # read once typed (Enter, or leaving the box), not at each key
            placeholder="all, or a number",
            description="Train images",
            tooltip="how many training images (a class-balanced sample), or all of them",
            **_narrow(),
        )
        self.limit_box.add_class("jc-train-limit")
        self.limit.observe(lambda _: self.show_limit(), names="value")
        self._limit_refused = False  # the errors area shows a refused train-images text
        self.limit_box.observe(self._on_limit_text, names="value")
        self.show_limit()
        self.preset.observe(self._on_preset, names="value")
        self.minutes.observe(self._on_minutes, names="value")
        for box in (self.epochs, self.batch_size, self.learning_rate):
            box.observe(lambda _: self.on_change(), names="value")
        self._show_preset_info()
        self.rows = [
            w.HBox([self.preset, self.preset_info], layout=w.Layout(align_items="center")),
            w.HBox(
                [self.epochs, self.minutes, self.batch_size, self.learning_rate, self.limit_box],
                layout=row_layout(),
            ),
        ]

    def config(self) -> TrainConfig:
        """What Start trains: a new network of the chosen preset, with the form's values."""
        from ..engine.training import TrainConfig

        minutes = self.minutes.value or None
        return TrainConfig(
            preset=self.preset.value,
            epochs=None if minutes else self.epochs.value,
            minutes=minutes,
            batch_size=self.batch_size.value,
            learning_rate=self.learning_rate.value,
            train_limit=self.limit.value or None,
        )

    def continue_config(self) -> TrainConfig:
        """What Continue trains: the model in hand as the network it is, with the form's values."""
        from dataclasses import replace

        from ..engine.training import why_not_trainable

        session = self.session
        if session.model is None:
            raise RuntimeError("there is no model to continue: train one, or load one in the Models tab")
        why = why_not_trainable(session.model)
        if why is not None:
            raise RuntimeError(f"{session.model_label} cannot be trained here: {why}")
        network = session.recipe.get("preset")
        config = self.config()
        if network not in (None, config.preset):
            raise RuntimeError(f"{session.model_label} is a {network} network: choose {network} in Network")
        return replace(config, preset=network or config.preset)

    def continue_advice(self, as_job: bool) -> tuple[bool, str, bool]:
        """Whether Continue can train the model in hand with these values (as a job, or here), what to
        say beside the button, and whether that is a warning."""
        from ..engine.training import why_not_trainable

        session, note = self.session, ""
        network = session.recipe.get("preset")
        chosen = self.preset.value
        allowed = session.model is not None and network in (None, chosen)
        why = why_not_trainable(session.model) if session.model is not None else None
        if why is not None:
            allowed = False
            note = f"The current model ({session.model_label}) cannot be trained here: {why}."
        elif as_job and allowed and session.record is None:
            allowed = False
            note = (
                f"A job continues a saved version, and the current model ({session.model_label}) is not "
                "saved: save it, or untick 'as a job' to continue it in this kernel."
            )
        elif session.model is None:
            note = ""
        elif not allowed:
            note = (
                f"Continue trains the current model ({session.model_label}) as the {network} network it "
                f"is: choose {network} in Network to continue it (the network you chose is for Start)."
            )
        else:
            done = epochs_text(epochs_done(session.history))
            where = "queues a job that trains" if as_job else "trains"
            more = minutes_text(self.minutes.value) if self.minutes.value else epochs_text(self.epochs.value)
            note = (
                f"Continue {where} the current model for {more} more with the "
                f"values above (it has had {done}: {session.model_label})"
            )
            if network is None:
                note += f"; its recipe is not known: it trains with {chosen}'s optimizer"
            far = self.far_from(session.recipe)
            if far:
                note += "; far from its own recipe: " + ", ".join(far)
        warn = "far from" in note or (session.model is not None and not allowed)
        return allowed, note, warn

    def show_recipe(self, recipe: Mapping[str, Any]) -> None:
        """The form shows a model's own recipe (its network, batch size and learning rate)."""
        if recipe.get("preset") not in PRESETS:
            return
        if self.preset.value != recipe["preset"]:
            self.preset.value = recipe["preset"]  # fills in its recipe (_on_preset)
        else:
            self.batch_size.value = recipe.get("batch_size", self.batch_size.value)
            self.learning_rate.value = recipe.get("learning_rate", self.learning_rate.value)

    def show_spec(self, spec: Mapping[str, Any]) -> None:
        """The form shows what a job trains (a value it leaves to its preset: the preset's)."""
        if spec.get("preset") in PRESETS and spec["preset"] != self.preset.value:
            self.preset.value = spec["preset"]  # its recipe fills the form (_on_preset)
        for box, key in (
            (self.epochs, "epochs"),
            (self.batch_size, "batch_size"),
            (self.learning_rate, "learning_rate"),
        ):
            if spec.get(key) is not None:
                box.value = spec[key]
        self.minutes.value = spec.get("minutes") or 0.0
        self.limit.value = spec.get("train_limit") or 0

    def far_from(self, recipe: Mapping[str, Any]) -> list[str]:
        """The form's values far from a model's own recipe, said for people."""
        far = []
        for key, box, name in (
            ("batch_size", self.batch_size, "batch size"),
            ("learning_rate", self.learning_rate, "learning rate"),
        ):
            own = recipe.get(key)
            if own and not 1 / FAR[key] <= box.value / own <= FAR[key]:
                far.append(f"{name} {box.value:g} (it was trained with {own:g})")
        return far

    def show_limit(self) -> None:
        """The train-images box shows the number in ``self.limit``: 0 as "all (50,000)" ("all" while the
        data is not loaded), any other number as the digits typed (a text that means it stays as typed)."""
        data = self.session.loaded_data()
        total = None if data is None else len(data.x_train)
        wanted = self.limit.value
        try:
            shown = parse_train_images(self.limit_box.value)
        except BadParameter:
            shown = None
        with self.limit_box.hold_sync():
            self.limit_box.options = [
                _all_text(total),
                *(str(n) for n in LIMIT_CHOICES if total is None or n < total),
            ]
            if shown != wanted or (wanted == 0 and self.limit_box.value != _all_text(total)):
                self.limit_box.value = str(wanted) if wanted else _all_text(total)

    def _on_preset(self, change: dict[str, Any]) -> None:
        """A network's recipe fills the form: the model in hand's own, if it is that network."""
        preset = PRESETS[change["new"]]
        recipe = self.session.recipe if self.session.model is not None else {}
        own = recipe.get("preset") == preset.name
        self.epochs.value = preset.epochs
        self.batch_size.value = recipe.get("batch_size", preset.batch_size) if own else preset.batch_size
        self.learning_rate.value = (
            recipe.get("learning_rate", preset.learning_rate) if own else preset.learning_rate
        )
        self._show_preset_info()
        self.on_change()

    def _on_minutes(self, change: dict[str, Any]) -> None:
        """Minutes other than 0 rule the run: the epochs box is off while they do."""
        self.epochs.disabled = bool(change["new"])
        self.on_change()

    def _show_preset_info(self) -> None:
        self.preset_info.value = text_html(PRESETS[self.preset.value].description)

    def _on_limit_text(self, change: dict[str, Any]) -> None:
        """Text typed into the train-images box: "all" (or nothing, or 0) or a number; anything else is
        refused, saying so, and the box shows the number in hand again. (Not ``guarded``: the box also
        changes when the data's count comes, which must not clear another error.)"""
        try:
            wanted = parse_train_images(change["new"])
        except BadParameter as e:
            self.show_limit()
            self.errors.show(e)
            self._limit_refused = True
            return
        if self._limit_refused:  # the refusal shown is answered
            self._limit_refused = False
            self.errors.clear()
        self.limit.value = wanted  # at most 50,000 (BoundedIntText): the box then shows what it kept
        self.show_limit()


def parse_train_images(text: str) -> int:
    """The train-images box's text as a number: "all", "all (50,000)", nothing or 0 mean all (0);
    "1000", "1,000" or "1 000" that many."""
    cleaned = text.strip().lower()
    if not cleaned or cleaned.startswith("all"):
        return 0
    digits = re.sub(r"[,_ ]", "", cleaned)
    if not re.fullmatch(r"[0-9]+", digits):
        raise BadParameter("Train images", f"{text.strip()!r} is not a number of images: write one, or all")
    return int(digits)


def _all_text(total: int | None) -> str:
    """ "all (50,000)": what 0 training images (all of them) reads as; "all" while the count is unknown."""
    return "all" if total is None else f"all ({total:,})"


def _narrow() -> dict[str, Any]:
    """Arguments for a short labelled number box whose label is never cut."""
    return {"layout": w.Layout(width="auto", min_width="200px"), "style": {"description_width": "initial"}}
