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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vanishing.model.activations import ACTIVATIONS
from vanishing.model.recurrent import RECURRENT
from vanishing.settings.config import TrainConfig, older_defaults, settings, unhashed

# A watched model's config (`vanishing.watch`) describes its structure in these keys; its class
# name, activation and widths already say it, so they never become a setting's words or axes.
MODEL_KEYS = (
    "description",
    "parameters",
    "layers",
    "activation_layers",
    "activation_kinds",
    "layer_labels",
    "tied",
    "residual",
    "recurrent_layers",
    "sequence_layers",
    "lr_range",
)

MAX_NAME_BYTES = 255  # the longest file name most file systems take (ext4, APFS, NTFS's 255 units)


def watched(config: dict[str, Any]) -> bool:
    """The run is a user's own model measured by `vanishing.watch`, not a TrainConfig run."""
    return config.get("source") == "watch"


def world_size(config: dict[str, Any]) -> int:
    """How many processes a run's records come from: config.json's "world_size" (a
    data-parallel watch), 1 where it has none (a single process, older records) or a damaged
    value."""
    size = config.get("world_size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else 1


def rank_of(config: dict[str, Any]) -> int | None:
    """The rank that wrote a rank directory's run (config.json's "rank"), None for any other
    run (a combined run, a single process) or a rank outside 0 .. world_size - 1."""
    rank = config.get("rank")
    if isinstance(rank, int) and not isinstance(rank, bool) and 0 <= rank < world_size(config):
        return rank
    return None


def run_name(config: TrainConfig) -> str:
    """A run directory's name: each setting's token (`setting(token=...)`) in their order, a
    setting with an `older` value only where it differs from it (so that the names of runs
    written before it existed stay what they were), then a hash of every setting that changes
    the result (where it trains aside; a setting at its `older` value left out too)."""
    older = older_defaults()
    values = {
        key: value
        for key, value in config.to_dict().items()
        if key not in unhashed() and not (key in older and value == older[key])
    }
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    tokens = sorted(
        (setting.metadata["token"].place, setting.metadata["token"](getattr(config, setting.name)))
        for setting in settings()
        if setting.metadata["token"] is not None
        and not (setting.name in older and getattr(config, setting.name) == older[setting.name])
    )
    return fitted([token for _, token in tokens], digest)


def fitted(tokens: list[str], digest: str) -> str:
    """`TOKENS-DIGEST`, within a file name's MAX_NAME_BYTES: a longer name (100 hidden widths)
    has its longest token (the widths) cut to fit, at a `-` where it has one, and marked `+`;
    the digest, of every setting, still tells it from any other. Every name that fits is
    left as it is, so that existing runs keep their directories."""
    name = "-".join([*tokens, digest])
    excess = len(name.encode()) - MAX_NAME_BYTES
    if excess <= 0:
        return name
    longest = max(range(len(tokens)), key=lambda i: len(tokens[i].encode()))
    kept = tokens[longest].encode()[: max(len(tokens[longest].encode()) - excess - 1, 1)]
    cut = kept.decode(errors="ignore")
    cut = cut[: cut.rindex("-")] if "-" in cut[1:] else cut
    name = "-".join([*tokens[:longest], cut + "+", *tokens[longest + 1 :], digest])
    return name  # within the limit: every other token is short (tests/test_properties.py)


def compare_run_name(config: TrainConfig) -> str:
    """The run directory's name within a comparison."""
    return f"{config.activation}-seed{config.seed}"


def recurrent(config: dict[str, Any]) -> bool:
    """A training run of a recurrent network (--arch rnn, lstm or gru)."""
    return not watched(config) and config.get("arch") in RECURRENT


# How a label names a recurrent network's cells: a plain RNN by its activation too.
CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN ({})"}


def title(config: dict[str, Any]) -> str:
    """What a run's label begins with: its activation ('ReLU'), a recurrent network's cells
    ('LSTM', 'RNN (Tanh)'), or for a watched model its class and activation ('Net (ReLU)')."""
    activation = ACTIVATIONS.get(config.get("activation", ""))
    name = activation.label if activation is not None else str(config.get("activation"))
    if watched(config) and config.get("model"):
        return f"{config['model']} ({name})"
    if recurrent(config):
        return CELLS[config["arch"]].format(name)
    return name


def axes(config: dict[str, Any]) -> dict[str, Any]:
    """A config as the axes a label names: depth and width (equal widths) or the widths joined,
    then every other key but the activation and the device; a watched model's structure is left
    to its title ('Net (ReLU)'), its depth is its activation layers'."""
    values = {k: v for k, v in config.items() if k not in ("activation", "device")}
    values.pop("ranks", None)  # which processes wrote records, not how the run trained
    if rank_of(config) is not None:  # the label says "rank 1 of 2"
        values.pop("rank", None)
        values.pop("world_size", None)
    hidden: Sequence[Any] = values.pop("hidden", None) or ()
    if watched(config):
        for key in ("source", "model", *MODEL_KEYS):
            values.pop(key, None)
        return {"depth": len(hidden), **values}
    if len(set(hidden)) == 1:
        return {"depth": len(hidden), "width": hidden[0], **values}
    return {"depth": len(hidden), "widths": "-".join(map(str, hidden)), **values}


def label(
    config: TrainConfig | dict[str, Any], others: Sequence[TrainConfig | dict[str, Any]] = ()
) -> str:
    """A run's (or a report point's) label, the same on the live page and in the report: its
    title, then the axes in which it differs from `others` (the runs started or listed with it,
    the report's other points), as `namer` words them: 'ReLU', 'ReLU, sgd, 3 epochs, batch 32',
    'ReLU, seed 1'; a data-parallel job's rank directory read as a run says which rank
    ('Net (ReLU), rank 1 of 2'). A watched model is set against watched models only."""
    values = config.to_dict() if isinstance(config, TrainConfig) else config
    rest = [other.to_dict() if isinstance(other, TrainConfig) else other for other in others]
    rest = [other for other in rest if watched(other) == watched(values)]  # alike with alike

    def said(item: dict[str, Any]) -> dict[str, Any]:
        # the title names the network ('LSTM', 'RNN (Tanh)', an MLP by its activation alone)
        return {k: v for k, v in axes(item).items() if k != "arch"}

    words = namer([said(item) for item in [values, *rest]])(said(values))
    rank = rank_of(values)
    if rank is not None:  # a data-parallel job's rank, given alone: never a seed
        words = ", ".join(filter(None, [words, f"rank {rank} of {world_size(values)}"]))
    name = title(values)
    return f"{name}, {words}" if words else name


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
    "arch": "{}",
    "sequence": "{}",
    "length": "T = {}",
    "forget_bias": "forget-gate bias {}",
    "world_size": "{} processes",  # a data-parallel watched run's
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


def clean_tag(name: str) -> str:
    """A name as one component of an exported tag: characters TensorBoard would replace (and
    `/`) as `_`."""
    return re.sub(r"[^-\w.]", "_", name) or "_"


def unique_tags(names: Sequence[str]) -> list[str]:
    """The names as tag components (`clean_tag`), a repeated one numbered (`fc`, `fc_2`), so no
    two layers share a tag."""
    seen: dict[str, int] = {}
    result = []
    for name in map(clean_tag, names):
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return result


@dataclass(frozen=True)
class LayerNames:
    """How sentences, figures and exported tags name a run's layers: its hidden (activation)
    layers, counted from 1 on the input side, and its weighted layers, in the order the
    weight-gradient lists have them. A TrainConfig run's are numbered ('layer 3', 'the output
    layer'; ticks 1 .. L, 'out'; tags layer1 .. layerL, output); a watched model's are its own
    modules' names (config.json's "layer_labels" and "layers": 'conv3', 'fc')."""

    hidden_modules: tuple[str, ...] = ()  # per hidden layer, as recorded; empty: numbered
    weighted_modules: tuple[str, ...] = ()  # per weighted layer, as recorded; empty: numbered
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
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        weighted = names("layers")
        ends = None
        if isinstance(grad_norms, list) and len(grad_norms) == len(weighted):
            reached = [i for i, norm in enumerate(grad_norms) if norm is not None]
            if len(reached) >= 2:
                first, last = weighted[reached[0]], weighted[reached[-1]]
                ends = (spoken_name(first), spoken_name(last))
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
    def hidden_names(self) -> tuple[str, ...]:
        """Each hidden layer's name as sentences and figures say it; empty: numbered."""
        return tuple(map(spoken_name, self.hidden_modules))

    @property
    def weighted_names(self) -> tuple[str, ...]:
        """Each weighted layer's name as sentences and figures say it; empty: numbered."""
        return tuple(map(spoken_name, self.weighted_modules))

    def hidden_ticks(self, count: int) -> list[str]:
        """A figure's labels for `count` hidden layers, input side first: the modules' names
        when there are that many, else 1 .. count."""
        if len(self.hidden_modules) == count:
            return list(self.hidden_names)
        return [str(i) for i in range(1, count + 1)]

    def weighted_ticks(self, count: int) -> list[str]:
        """A figure's labels for `count` weighted layers, input side first: the modules' names
        when there are that many, else 1 .. count - 1 and 'out'."""
        if len(self.weighted_modules) == count:
            return list(self.weighted_names)
        return [str(i) for i in range(1, count)] + ["out"]

    def tags(self, kind: str, count: int) -> list[str]:
        """Short tags for a per-layer list of `count` values of the "weighted" or the
        "activation" layers, as export names them: the recorded names (`unique_tags`) when
        there are that many, else layer1 .. layerN, the last weighted one `output`."""
        given = self.weighted_modules if kind == "weighted" else self.hidden_modules
        if given and len(given) == count:
            return unique_tags(given)
        names = [f"layer{i}" for i in range(1, count + 1)]
        if kind == "weighted" and count > 1:
            names[-1] = "output"
        return names

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
