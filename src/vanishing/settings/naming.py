"""Names, in one place: a run directory's name, a run's label (the page's and the report's), and
a run's layers as sentences, figures, the page and export name them.

A run directory is named by its settings (`run_name`: readable parts and a hash of every setting
that changes the result), so two settings never share one; a compare's runs are named by
activation and seed within its own directory (`compare_run_name`). Layers of the trainer's MLPs
are numbered ('layer 3', 'the output layer'); a watched model's are its modules' own names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vanishing import records
from vanishing.model.activations import ACTIVATIONS
from vanishing.settings.config import TrainConfig, shown

# A watched model's config (`vanishing.watch`) describes its structure in these keys; its class
# name, activation and widths already say it, so they never become a setting's words or axes.
MODEL_KEYS = (
    "description",
    "parameters",
    "layers",
    "activation_layers",
    "activation_kinds",
    "layer_labels",
)


def watched(config: dict[str, Any]) -> bool:
    """The run is a user's own model measured by `vanishing.watch`, not a TrainConfig run."""
    return config.get("source") == "watch"


def run_name(config: TrainConfig) -> str:
    """Readable parts plus a hash of every field that changes the result (not the device; not a
    setting added later while it has the value older records mean: their runs keep their names)."""
    values = {
        k: v
        for k, v in config.to_dict().items()
        if k != "device" and not (k in records.ADDED_LATER and v == records.ADDED_LATER[k])
    }
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    hidden = config.hidden
    shape = (
        f"d{len(hidden)}w{hidden[0]}" if len(set(hidden)) == 1 else "h" + "-".join(map(str, hidden))
    )
    cures = [
        *([f"{config.norm}norm"] if config.norm != "none" else []),
        *(["residual"] if config.residual else []),
        *([f"gain{config.init_gain:.3g}"] if config.init_gain != 1.0 else []),
        *([f"clip{config.clip_grad_norm:g}"] if config.clip_grad_norm is not None else []),
    ]  # only where set: the names of runs without them stay what older versions gave
    return (
        f"{config.activation}-{shape}-{config.init}-{config.optimizer}-lr{config.lr:g}"
        + "".join(f"-{cure}" for cure in cures)
        + f"-s{config.seed}-{digest}"
    )


def compare_run_name(config: TrainConfig) -> str:
    """The run directory's name within a comparison."""
    return f"{config.activation}-seed{config.seed}"


def label(
    config: TrainConfig | dict[str, Any], others: Sequence[TrainConfig | dict[str, Any]] = ()
) -> str:
    """A run as the page names it: 'ReLU, depth 10', then the other settings in which it differs
    from `others` (the runs started with it, or listed beside it): 'ReLU, depth 10, seed 1'."""
    values = config.to_dict() if isinstance(config, TrainConfig) else config
    activation = ACTIVATIONS.get(values.get("activation", ""))
    name = activation.label if activation is not None else str(values.get("activation"))
    words = [name, f"depth {len(values.get('hidden') or [])}"]
    skipped = {"activation", "device"}
    if watched(values):  # a watched model: 'Net (ReLU)', its structure's keys unsaid
        words = [f"{values.get('model')} ({name})"]
        skipped |= {"source", "model", "hidden", *MODEL_KEYS}
    rest = [other.to_dict() if isinstance(other, TrainConfig) else other for other in others]
    rest = [other for other in rest if watched(other) == watched(values)]  # alike with alike
    for key, value in values.items():
        if key not in skipped and any(o.get(key) != value for o in rest):
            words.append(f"{key.replace('_', ' ')} {shown(value)}")
    return ", ".join(words)


# How a varying axis reads in a label, in label order.
AXIS_WORDS = {
    "depth": "depth {}",
    "width": "width {}",
    "widths": "{}",
    "init": "init {}",
    "optimizer": "{}",
    "lr": "lr {}",
    "epochs": "{} epochs",
    "batch_size": "batch {}",
    "dataset": "{}",
}


def axis_word(key: str, value: Any) -> str:
    """How one axis reads in a name: its AXIS_WORDS form, else the key's words and the value
    ('momentum 0.9', 'norm batch'), a flag or None as 'residual' or 'no residual'."""
    value = f"{value:g}" if isinstance(value, float) else value
    if key in AXIS_WORDS:
        return AXIS_WORDS[key].format(value)
    words = key.replace("_", " ")
    if value is True:
        return words
    return f"no {words}" if value is None or value is False else f"{words} {value}"


def namer(items: Sequence[dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """Names for axes dicts that say only what varies among `items`: 'depth 5, sgd, lr 0.1',
    the AXIS_WORDS first in their order, then any other key ('momentum 0.9')."""
    keys = dict.fromkeys([*AXIS_WORDS, *(key for item in items for key in item)])
    varying = [
        key
        for key in keys
        if len({json.dumps([key in item, item.get(key)], default=str) for item in items}) > 1
    ]

    def name(item: dict[str, Any]) -> str:
        words = []
        for key in varying:
            if key not in item or (key == "depth" and "widths" in item):  # the widths say it
                continue
            if item[key] is None and key in AXIS_WORDS:
                continue
            value = item[key]
            if value is None or value is False or value == "none":  # a cure left off: unsaid
                continue
            words.append(axis_word(key, item[key]))
        return ", ".join(words)

    return name


def spoken_name(name: Any) -> str:
    """A module's name as a sentence says it: 'conv3'; a bare Sequential index as 'module 3'."""
    text = str(name)
    return f"module {text}" if text.isdigit() else text


@dataclass(frozen=True)
class LayerNames:
    """How sentences name a run's layers: its hidden (activation) layers, counted from 1 on the
    input side, and its weighted layers, in the order the weight-gradient lists have them. A
    TrainConfig run's are numbered ('layer 3', 'the output layer'); a watched model's are its
    own modules' names (config.json's "layer_labels" and "layers": 'conv3', 'fc')."""

    hidden_names: tuple[str, ...] = ()  # per hidden layer; empty: numbered
    weighted_names: tuple[str, ...] = ()  # per weighted layer; empty: numbered
    # The first and the last weighted layer a gradient reached at step 0, whose ratio the
    # weight-gradient sentences read (a watched model may list a layer it never used).
    ends: tuple[str, str] | None = None

    @classmethod
    def of(cls, config: dict[str, Any], grad_norms: Any = None) -> LayerNames:
        """The names in a config; `grad_norms` (the first probe's) says which layers the
        weight-gradient ratio spans."""
        if not watched(config):
            return cls()

        def names(key: str) -> tuple[str, ...]:
            value = config.get(key)
            return tuple(spoken_name(v) for v in value) if isinstance(value, list) else ()

        weighted = names("layers")
        ends = None
        if isinstance(grad_norms, list) and len(grad_norms) == len(weighted):
            reached = [i for i, norm in enumerate(grad_norms) if norm is not None]
            if len(reached) >= 2:
                ends = (weighted[reached[0]], weighted[reached[-1]])
        return cls(names("layer_labels"), weighted, ends)

    @classmethod
    def listed(cls, config: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Every weighted layer's name and every hidden layer's, in the order a probe row's
        lists have them (the live page's axes): a watched model's own, else a TrainConfig run's
        numbered, its hidden layers then the output layer."""
        names = cls.of(config)
        if watched(config):
            return list(names.weighted_names), list(names.hidden_names)
        hidden = len(config.get("hidden") or [])
        weighted = [names.weighted(layer, hidden + 1) for layer in range(1, hidden + 2)]
        return weighted, [names.hidden(layer) for layer in range(1, hidden + 1)]

    @property
    def first_last(self) -> tuple[str, str] | None:
        """The two layers the weight-gradient ratio compares, by name; None when numbered."""
        if self.ends is not None:
            return self.ends
        if len(self.weighted_names) >= 2:
            return self.weighted_names[0], self.weighted_names[-1]
        return None

    @property
    def named(self) -> bool:
        """The layers have names of their own (a watched model)."""
        return bool(self.hidden_names)

    def hidden(self, layer: int) -> str:
        """Hidden layer `layer` (from 1): 'layer 3' or 'conv3'."""
        if 1 <= layer <= len(self.hidden_names):
            return self.hidden_names[layer - 1]
        return f"layer {layer}"

    def units(self, layer: int) -> str:
        """The same, before 'units' or 'activations': 'layer-3' or 'conv3'."""
        if 1 <= layer <= len(self.hidden_names):
            return self.hidden_names[layer - 1]
        return f"layer-{layer}"

    def weighted(self, layer: int, layers: int) -> str:
        """Weighted layer `layer` (from 1) of `layers`: 'layer 3', 'the output layer' for the
        last Linear layer, or the module's name."""
        if 1 <= layer <= len(self.weighted_names):
            return self.weighted_names[layer - 1]
        return "the output layer" if layer == layers else f"layer {layer}"

    def share(self, ratio: str) -> str:
        """The first weighted layer's weight gradient over the last's, in words: 'layer 1
        receives 2e-05 of the output layer's weight gradient', or 'layer conv1 receives 2e-05
        of the weight gradient fc receives'."""
        if self.first_last is not None:
            first, last = self.first_last
            return f"layer {first} receives {ratio} of the weight gradient {last} receives"
        return f"layer 1 receives {ratio} of the output layer's weight gradient"

    def gets(self, ratio: str) -> str:
        """'layer 1 gets 2.5 of the output layer's', or 'conv1 gets 2.5 of fc's'."""
        if self.first_last is not None:
            first, last = self.first_last
            return f"{first} gets {ratio} of {last}'s"
        return f"layer 1 gets {ratio} of the output layer's"

    def share_short(self) -> str:
        """'layer 1 / output', or 'conv1 / fc'."""
        if self.first_last is not None:
            return " / ".join(self.first_last)
        return "layer 1 / output"


NUMBERED = LayerNames()  # a TrainConfig run's layers: 'layer 3', 'the output layer'
