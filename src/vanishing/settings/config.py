"""Every training setting, declared once: `TrainConfig`, whose fields carry what the rest of the
package needs to know of them (`setting(...)`).

The command line (`train`, `compare`, `sweep`), the API's keyword arguments, the live page's form,
the sweep grid's axes and TOML keys, the `--help` texts, run directory names, what may differ
inside a group of stacked models, which settings are cures in the report, and what older records
mean by a setting they lack are all derived from these fields: adding a setting means adding a
field here and implementing it, nothing else. `settings.codec` parses their values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vanishing.data.datasets import DATASETS, get_spec
from vanishing.data.sequences import ADDING, DEFAULT_LENGTH, SEQUENCES
from vanishing.devices import DEVICES
from vanishing.errors import UsageError, brief, choices_error
from vanishing.model.activations import (
    ACTIVATIONS,
    DEFAULT_OPTIONS,
    PRELU_MODES,
    ActivationOptions,
    get_activation,
)
from vanishing.model.mlp import (
    NORMS,
    OPTIMIZERS,
    SEED_HIDDEN,
    check_optimizer_settings,
    check_widths,
    init_names,
)
from vanishing.model.recurrent import ARCHS, GATED, RECURRENT

SECTIONS = ("model", "optimisation", "measurement", "data")  # --help sections, in this order
MAX_SEED = 2**64 - 1  # the most torch.Generator.manual_seed takes
NEVER = object()  # `older`'s default: the setting has been in every record ever written


@dataclass(frozen=True)
class Token:
    """How a setting shows in a run directory's name: `form` formatted with its value
    (`"lr{:g}"`), or a function of it; `place` orders the tokens (the seed's is last but the
    hash). A setting with an `older` value is named only where it differs from it, so that
    directories written before the setting existed keep their names."""

    form: str | Callable[[Any], str]
    place: float

    def __call__(self, value: Any) -> str:
        return self.form(value) if callable(self.form) else self.form.format(value)


def setting(
    default: Any,
    help: str,
    *,
    why: str = "",
    section: str = "model",
    metavar: str | None = None,
    choices: Callable[[], Sequence[str]] | None = None,
    axis: str | None = None,
    values: tuple[Any, ...] | None = None,
    every: Callable[[], Sequence[Any]] | None = None,
    cure: bool = False,
    per_model: bool = False,
    older: Any = NEVER,
    token: Token | None = None,
    changes_result: bool = True,
    words: str | None = None,
) -> Any:
    """A TrainConfig field with what the command line, the sweeps, the records and the report
    need to know of it.

    `help` says what it is ("{choices}" lists `choices()`); `why` says why the default is what it
    is, shown after it in --help, in `section`. `axis` is the plural name under which compare and
    sweep take a list of values (`--seeds 0,1,2`, TOML `seeds = [0, 1, 2]`), `values` that list's
    default (else the default alone), `every` what the axis value `all` stands for; a field
    without `axis` is one value shared by every run of a sweep. `cure`: the report compares
    runs that differ in it as cures of a failure. `per_model`: the models of one group of
    stacked models may differ in it. `older`: the value that records written before the setting
    existed mean (they lack the key). `token`: how it shows in a run directory's name.
    `changes_result`: False for where a run trains (a run may resume elsewhere; it is not in
    the name's hash). `words`: how prose names it (default: its name, spaced).
    """
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "why": why,
            "section": section,
            "metavar": metavar,
            "choices": choices,
            "axis": axis,
            "values": values if values is not None else (default,),
            "all": every,
            "cure": cure,
            "per_model": per_model,
            "older": older,
            "token": token,
            "changes_result": changes_result,
            "words": words,
        },
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one run; the defaults are the reference experiment's."""

    activation: str = setting(
        "relu",
        "activation after every hidden layer: {choices}",
        why="the reference's better one",
        choices=lambda: list(ACTIVATIONS),
        metavar="NAME",
        axis="activations",
        # The reference's pair and the rectifier's two fixes for dead units.
        values=("sigmoid", "relu", "leaky_relu", "prelu"),
        every=lambda: list(ACTIVATIONS),
        per_model=True,
        token=Token("{}", 0),
    )
    hidden: tuple[int, ...] = setting(
        SEED_HIDDEN,
        "hidden widths, input side first",
        why="the reference MLP 784-520-320-240-120-10",
        metavar="W1,W2,..",
        token=Token(lambda hidden: shape_token(hidden), 1),
    )
    init: str = setting(
        "default",
        "weight init: {choices}",
        why="PyTorch's own Linear init, as the reference code used",
        choices=init_names,
        metavar="NAME",
        axis="inits",
        cure=True,
        per_model=True,
        token=Token("{}", 2),
    )
    optimizer: str = setting(
        "adam",
        "optimizer: {choices}",
        why="betas 0.9/0.999, eps 1e-8, the reference's",
        section="optimisation",
        choices=lambda: list(OPTIMIZERS),
        metavar="NAME",
        axis="optimizers",
        token=Token("{}", 3),
    )
    lr: float = setting(
        1e-3,
        "learning rate",
        why="the reference's",
        section="optimisation",
        metavar="LR",
        axis="lrs",
        token=Token("lr{:g}", 4),
    )
    momentum: float = setting(
        0.0, "SGD momentum, for sgd only", section="optimisation", metavar="M"
    )
    clip_grad_norm: float | None = setting(
        None,
        "clip the global gradient norm to X before each step, counting the steps it clipped "
        "(none: no clipping)",
        why="the reference does not clip",
        section="optimisation",
        metavar="X",
        axis="clip_grad_norms",
        cure=True,
        per_model=True,  # a per-model coefficient on its own gradients
        older=None,
        token=Token("clip{:g}", 8),
        words="gradient clipping",
    )
    batch_size: int = setting(
        64, "samples per step", why="the reference's", section="optimisation", metavar="N"
    )
    epochs: int = setting(
        9,
        "passes over the training set",
        why="the reference's",
        section="optimisation",
        metavar="N",
    )
    seed: int = setting(
        0,
        "random seed: weights, data order and probe batch",
        section="optimisation",
        metavar="S",
        axis="seeds",
        # Three seeds: enough to see whether a gap exceeds the seed spread.
        values=(0, 1, 2),
        per_model=True,
        token=Token("s{}", 9),
    )
    dataset: str = setting(
        "mnist",
        "data set: {choices}",
        section="data",
        choices=lambda: list(DATASETS),
        metavar="NAME",
    )
    norm: str = setting(
        "none",
        "normalisation between each hidden Linear and its activation: {choices}; batch norm "
        "uses batch statistics in training and in the probes, running ones in evaluation "
        "(runs with a norm train one at a time, not in groups)",
        why="the reference has none",
        choices=lambda: list(NORMS),
        metavar="NAME",
        axis="norms",
        cure=True,
        older="none",
        token=Token("{}norm", 5),
        words="normalisation",
    )
    residual: bool = setting(
        False,
        "an identity skip around every hidden layer but the first, h + act(norm(W h + b)); "
        "needs equal hidden widths (--depth/--width)",
        why="the reference has none",
        metavar="yes|no",
        axis="residuals",
        cure=True,
        older=False,
        token=Token("residual", 6),
        words="residual connections",
    )
    init_gain: float = setting(
        1.0,
        "multiply the init's weight standard deviation by G (above 1: exploding signals)",
        why="each init's own scale",
        metavar="G",
        axis="init_gains",
        cure=True,
        per_model=True,  # drawn per model, as the init is
        older=1.0,
        token=Token("gain{:.3g}", 7),
    )
    negative_slope: float = setting(
        DEFAULT_OPTIONS.negative_slope,
        "leaky_relu's slope for z < 0",
        why="PyTorch's default",
        metavar="A",
    )
    prelu_mode: str = setting(
        DEFAULT_OPTIONS.prelu_mode,
        "PReLU slopes: {choices}",
        why="one learned slope per layer, PyTorch's default",
        choices=lambda: PRELU_MODES,
        metavar="MODE",
    )
    probe_every: int = setting(
        300,
        "measure gradient flow every K steps",
        why="about 3 probes per MNIST epoch cost under 5 % of training time",
        section="measurement",
        metavar="K",
    )
    probe_size: int = setting(
        512,
        "samples in the fixed probe batch",
        why="stable norms, cheap to measure",
        section="measurement",
        metavar="N",
    )
    arch: str = setting(
        "mlp",
        "network: {choices}; a recurrent one reads each image as a sequence (--sequence) and "
        "stacks one recurrent layer per --hidden width",
        why="the reference's MLP",
        choices=lambda: list(ARCHS),
        metavar="NAME",
        axis="archs",
        cure=True,  # gated cells are the recurrent network's cure for vanishing through time
        older="mlp",
        token=Token("{}", 0.5),
        words="architecture",
    )
    sequence: str | None = setting(
        None,
        "how a recurrent network reads an image: {choices} (none: rows for a recurrent "
        "network on MNIST or Fashion-MNIST, the adding problem's own sequence)",
        why="an MLP reads the whole image at once",
        section="data",
        choices=lambda: list(SEQUENCES),
        metavar="NAME",
        axis="sequences",
        older=None,
        token=Token("{}", 0.6),
    )
    length: int | None = setting(
        None,
        f"the adding problem's sequence length T (--dataset adding; none: {DEFAULT_LENGTH})",
        why="a length where a tanh RNN already fails",
        section="data",
        metavar="T",
        axis="lengths",
        older=None,
        token=Token("T{}", 0.7),
    )
    forget_bias: float | None = setting(
        None,
        "an LSTM's forget-gate bias at init (none: PyTorch's init; 1 keeps the cell through "
        "time, Jozefowicz et al. 2015)",
        why="PyTorch's own LSTM init",
        metavar="B",
        axis="forget_biases",
        cure=True,
        older=None,
        token=Token("fb{:g}", 7.5),
        words="forget-gate bias",
    )
    train_size: int | None = setting(
        None,
        "train on the first N training examples (none: all of them)",
        why="the whole training set",
        section="data",
        metavar="N",
        older=None,
        token=Token("n{}", 8.5),
    )
    test_size: int | None = setting(
        None,
        "evaluate on the first N test examples (none: all of them)",
        why="the whole test set",
        section="data",
        metavar="N",
        older=None,
        token=Token("t{}", 8.6),
    )
    device: str = setting(
        "auto",
        "where to train: {choices}",
        why="the GPU when there is one",
        section="optimisation",
        choices=lambda: DEVICES,
        metavar="NAME",
        changes_result=False,  # a run may resume on another device
    )

    def __post_init__(self) -> None:
        get_activation(self.activation)
        get_spec(self.dataset)
        for name in ("init", "optimizer", "device", "norm"):
            if getattr(self, name) not in choices_of(name):
                raise choices_error(name, getattr(self, name), choices_of(name))
        object.__setattr__(self, "hidden", check_widths(self.hidden))
        if isinstance(self.seed, bool) or not (
            isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED
        ):
            raise UsageError(f"seed must be an integer 0 to 2**64-1, got {brief(self.seed)}")
        positive = {
            "batch size": self.batch_size,
            "epochs": self.epochs,
            "probe interval": self.probe_every,
            "probe size": self.probe_size,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
        check_optimizer_settings(self.lr, self.momentum)
        if isinstance(self.init_gain, bool) or not (
            isinstance(self.init_gain, (int, float)) and 0 < self.init_gain < math.inf
        ):
            raise UsageError(f"init gain must be a finite number > 0, got {self.init_gain!r}")
        clip = self.clip_grad_norm
        if clip is not None and (
            isinstance(clip, bool) or not (isinstance(clip, (int, float)) and 0 < clip < math.inf)
        ):
            raise UsageError(
                f"gradient clipping norm must be a finite number > 0 (leave it out, or none, "
                f"for no clipping), got {clip!r}"
            )
        if self.norm == "batch" and min(self.probe_size, self.batch_size) < 2:
            raise UsageError(
                "batch norm needs 2 samples or more to normalise with, got a batch size of "
                f"{self.batch_size} and a probe size of {self.probe_size}"
            )
        if self.residual and len(set(self.hidden)) > 1:
            raise UsageError(
                "residual connections need equal hidden widths (a skip adds a layer's input to "
                f"its output), got {shown(self.hidden)}; e.g. --depth 20 --width 256"
            )
        self.options  # noqa: B018 - ActivationOptions checks the slope and the PReLU mode
        self.check_recurrent()

    def check_recurrent(self) -> None:
        """The settings of recurrent networks and sequences, and their defaults: a recurrent
        network reads an image by rows unless told otherwise, the adding problem is
        DEFAULT_LENGTH steps long unless told otherwise."""
        if self.arch not in ARCHS:
            raise choices_error("arch", self.arch, ARCHS)
        recurrent = self.arch in RECURRENT
        if self.sequence is not None:
            if self.sequence not in SEQUENCES:
                raise choices_error("sequence", self.sequence, SEQUENCES)
            if not recurrent:
                raise UsageError(
                    "--sequence applies to recurrent networks (--arch rnn, lstm or gru); an "
                    "MLP reads the whole image at once"
                )
            if self.dataset == ADDING:
                raise UsageError(
                    "the adding problem is a sequence of its own; leave --sequence out"
                )
        if self.length is not None:
            if self.dataset != ADDING:
                raise UsageError(f"--length applies to --dataset {ADDING} only")
            if isinstance(self.length, bool) or not (
                isinstance(self.length, int) and self.length >= 2
            ):
                raise UsageError(
                    "length must be an integer >= 2 (two marked positions, one in each "
                    f"half), got {brief(self.length)}"
                )
        if self.dataset == ADDING:
            if not recurrent:
                raise UsageError(
                    f"--dataset {ADDING} is a sequence task: give --arch rnn, lstm or gru"
                )
            if self.length is None:
                object.__setattr__(self, "length", DEFAULT_LENGTH)
        elif recurrent and self.sequence is None:
            object.__setattr__(self, "sequence", SEQUENCES[0])
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not (isinstance(value, int) and value >= 1)
            ):
                words = name.replace("_", " ")
                raise UsageError(f"{words} must be an integer >= 1, got {brief(value)}")
        bias = self.forget_bias
        if bias is not None:
            if self.arch != "lstm":
                raise UsageError("--forget-bias applies to --arch lstm only")
            if isinstance(bias, bool) or not (
                isinstance(bias, (int, float)) and math.isfinite(bias)
            ):
                raise UsageError(f"forget bias must be a finite number, got {brief(bias)}")
        if self.arch in GATED and self.activation != "tanh":
            raise UsageError(
                f"{self.arch} cells use their own tanh and sigmoid: --activation applies to "
                f"--arch mlp and rnn (leave it out, or give tanh), got {self.activation}"
            )
        if self.init == "identity" and self.arch != "rnn":
            raise UsageError(
                "identity init sets a recurrent weight to the identity (IRNN, with --arch rnn "
                "--activation relu); use it with --arch rnn"
            )
        if recurrent and self.norm != "none":
            raise UsageError(
                f"--norm {self.norm} is not implemented for recurrent layers; leave it out"
            )
        if recurrent and self.residual:
            raise UsageError(
                "residual connections are not implemented for recurrent layers; leave them out"
            )

    @property
    def options(self) -> ActivationOptions:
        return ActivationOptions(negative_slope=self.negative_slope, prelu_mode=self.prelu_mode)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown config field(s) {', '.join(unknown)}")
        return cls(**{**values, "hidden": tuple(values.get("hidden", SEED_HIDDEN))})

    def differences(self, saved: dict[str, Any]) -> dict[str, Any]:
        """The settings in which a record's config (read back from JSON; an older one lacks
        the settings it predates, `completed`) differs from this one, where it trains aside:
        each with the record's value."""
        wanted = json.loads(json.dumps(self.to_dict()))
        saved = completed(saved)
        return {
            key: saved.get(key)
            for key in sorted(set(saved) | set(wanted))
            if key not in unhashed() and saved.get(key) != wanted.get(key)
        }


def settings() -> tuple[dataclasses.Field, ...]:
    """TrainConfig's fields, in declaration order: what the CLI and sweeps derive options from."""
    return dataclasses.fields(TrainConfig)


def field_named(name: str) -> dataclasses.Field:
    """The TrainConfig field `name` (an internal name: a KeyError if there is none)."""
    return TrainConfig.__dataclass_fields__[name]


def older_defaults() -> dict[str, Any]:
    """Setting -> what records written before it existed mean by its absence (`older`)."""
    return {f.name: f.metadata["older"] for f in settings() if f.metadata["older"] is not NEVER}


def completed(values: dict[str, Any]) -> dict[str, Any]:
    """A config.json's values with the settings it predates filled in (`older_defaults`): such a
    record reads as if it had them, so that older runs keep their names, resume and share a
    report's points. The keys come in TrainConfig's order, as a new record has them (then any
    key it does not know, in its own order)."""
    return in_field_order({**older_defaults(), **values})


def in_field_order(values: dict[str, Any]) -> dict[str, Any]:
    """The same values, TrainConfig's fields first in their declared order, then other keys."""
    known = [f.name for f in settings() if f.name in values]
    return {**{name: values[name] for name in known}, **values}


def per_model_fields() -> tuple[str, ...]:
    """The settings in which the models of one group of stacked models may differ."""
    return tuple(f.name for f in settings() if f.metadata["per_model"])


def words_of(setting: dataclasses.Field) -> str:
    """How prose names a setting: its `words`, else its name spaced ('init gain')."""
    return setting.metadata["words"] or setting.name.replace("_", " ")


def cure_keys() -> tuple[str, ...]:
    """The settings the report compares as cures of a failure."""
    return tuple(f.name for f in settings() if f.metadata["cure"])


def unhashed() -> tuple[str, ...]:
    """The settings that do not change a run's result (where it trains): left out of run
    names' hashes, and free to change when a run resumes."""
    return tuple(f.name for f in settings() if not f.metadata["changes_result"])


def shape_token(hidden: Sequence[int]) -> str:
    """The widths in a run name: `d30w256` for equal widths, else `h520-320-240-120`."""
    if len(set(hidden)) == 1:
        return f"d{len(hidden)}w{hidden[0]}"
    return "h" + "-".join(map(str, hidden))


def choices_of(name: str) -> list[str]:
    """The valid values of a field that takes names (`init`: every init, aliases too)."""
    choices = TrainConfig.__dataclass_fields__[name].metadata["choices"]
    return list(choices()) if choices is not None else []


def shown(value: Any) -> str:
    """A default as the command line writes it: `520,320,240,120`, `0.001`, `relu`, `none`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return ",".join(map(shown, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text(field: dataclasses.Field, default: Any = dataclasses.MISSING) -> str:
    """A field's --help line: what it is, its default and why (`default` overrides the field's)."""
    meta = field.metadata
    text = meta["help"].replace("{choices}", ", ".join(choices_of(field.name)))
    value = field.default if default is dataclasses.MISSING else default
    why = f", {meta['why']}" if meta["why"] and default is dataclasses.MISSING else ""
    return f"{text} (default: {shown(value)}{why})".replace("%", "%%")


def axes() -> dict[str, str]:
    """Field name -> its plural axis name, for the fields compare and sweep take lists of."""
    return {f.name: f.metadata["axis"] for f in settings() if f.metadata["axis"]}


def kind_of(setting: dataclasses.Field) -> type:
    """The Python type of a field's values (`tuple` for the hidden widths; `float` for an
    optional float, see `optional`)."""
    kind = typing.get_type_hints(TrainConfig)[setting.name]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    return typing.get_origin(kind) or kind


def optional(setting: dataclasses.Field) -> bool:
    """Whether the field takes None (written `none`), e.g. no gradient clipping."""
    kind = typing.get_type_hints(TrainConfig)[setting.name]
    return type(None) in typing.get_args(kind)
