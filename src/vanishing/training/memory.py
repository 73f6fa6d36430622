"""What a run needs in memory, what the machine has, and a one-line refusal when it does not fit.

`estimate(config, models)` counts, in bytes, what training allocates on its device (`train.fit`,
`group.fit_group`, `probes`), roughly (within a factor of about 1.5), never exactly:

- parameters: every parameter of the MLP (Linear weights and biases, a norm's scale and shift,
  PReLU's slopes), float32; `buffers`: batch norm's running statistics;
- gradients: one per parameter (`.grad` lives from the first step on);
- optimizer state: `Optimizer.state` values per parameter (Adam 2, SGD with momentum 1);
- probe copies: the probe's weight gradients, then the weights' snapshot held across a step;
- activations: the largest of four passes that never overlap (so their peak, not their sum):
  a training batch (input, and per hidden layer what autograd keeps: the pre-activation, a
  norm's output, the activation's output, a skip's sum; plus the backward's gradients of two
  layers), the probe batch (`forward_hidden` keeps every layer, and its backward returns a
  gradient per layer), the evaluation chunk (`EVAL_CHUNK` rows, no grad: a few layers at once)
  and, for rectifiers, the dead-unit chunk (`DEAD_CHUNK` rows through `forward_hidden`, which
  keeps every layer, while the previous chunk's outputs are still held);
- data: the training and test images as float32 784 features and their int64 labels, on the
  device (the first `--train-size` and `--test-size` of them), and each model's probe batch and
  data order.

A batch and the probe batch never exceed the training set (training slices its batches from the
set, the probe takes `randperm(n)[:probe_size]`): both are capped at its size, the loaded set's
when the caller has it (`train_samples`), else the count its spec registers.

A recurrent network (`--arch rnn`, `lstm`, `gru`) keeps every time step: parameters are nn.RNN's,
nn.LSTM's and nn.GRU's (gates x hidden x (inputs + hidden + 2) per layer) and the Linear head's; a
training batch keeps, per step and hidden unit of each layer, `FUSED[arch]` values (the gates
before and after their activations, the cell, the output; measured on the CPU, the backward's peak
included: a tanh RNN 4.6 to 5.7, a GRU 11 to 14.3, an LSTM 16.2 to 17.2 per batch x T x hidden);
the probe (`probes.measure_recurrent`) unrolls each layer step by step and keeps each h_t, its
gradient and the statistics of the output sequence, `UNROLLED[arch]` values (measured, the
allocator's pages included: a tanh RNN 10.5 to 25, an LSTM 20 to 31, a GRU 25 to 31 per probe x T x
hidden, the most for short sequences of wide layers); an evaluation pass takes as many rows as hold
EVAL_VALUES values of one layer's output (`train.eval_chunk`), `EVALUATED[arch]` values each (no
grad: a tanh RNN 3.1, an LSTM 2.5, a GRU 6.2, and the output of the layer below); recurrent runs
count no dead-unit pass (the probe counts dead units). The data set is T x features float32 values
per example (the adding problem's float targets in place of labels).

Everything per model counts K times for a group of K (`models`); the data, the evaluation and the
dead-unit chunks are shared (a group splits a chunk's rows among its models). Not counted: the
framework itself (CUDA context, libtorch's pages), host copies made while a group is stacked or
a checkpoint is written, and the allocator's fragmentation: that is the error margin. Measured
on the CPU (one epoch of MNIST, peak RSS less the RSS before training), the estimate was 0.8 to
0.9 of the real peak: 784-520-320-240-120-10 354 MB of 403 MB, 784-256x30-10 1.02 GB of 1.3 GB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from vanishing.data import sequences
from vanishing.data.adding import SIZES
from vanishing.data.datasets import get_spec
from vanishing.devices import resolve_device
from vanishing.errors import UsageError
from vanishing.measure.probes import DEAD_CHUNK
from vanishing.model.activations import get_activation, make_activation
from vanishing.model.mlp import NORMS, OPTIMIZERS
from vanishing.model.recurrent import GATES, NATIVE, RECURRENT
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import EVAL_CHUNK, sequence_rows

FLOAT = 4  # bytes of a float32 value
INDEX = 8  # bytes of an int64 label or index
IN_FEATURES, CLASSES = 784, 10
TRAIN_SAMPLES, TEST_SAMPLES = 60000, 10000  # MNIST's split, for a spec without counts
RUNS_IN_A_ROW = 4  # equal widths written 256x30 from this many on
# Values per time step and hidden unit of each recurrent layer that a training batch keeps for
# the backward (PyTorch's fused modules), and that the probe's step-by-step unroll keeps (h_t
# and its gradient too): measured on the CPU, rounded up (the module docstring).
FUSED = {"rnn": 6, "lstm": 17, "gru": 15}
UNROLLED = {"rnn": 16, "lstm": 28, "gru": 30}
EVALUATED = {"rnn": 4, "lstm": 4, "gru": 7}  # the same without grad, the layer below's output too


@dataclass(frozen=True)
class Estimate:
    """Bytes a run (or a group of `models` runs) needs on its device, by part; `peak` names the
    pass whose activations are the largest: batch, probe, evaluation or dead units."""

    parameters: int
    buffers: int
    gradients: int
    optimizer_state: int
    probe_copies: int
    activations: int
    data: int
    models: int = 1
    peak: str = "batch"

    @property
    def total(self) -> int:
        return sum(self.parts().values())

    def parts(self) -> dict[str, int]:
        """Each part's name, as the refusal writes it, and its bytes."""
        return {
            f.name.replace("_", " "): getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("models", "peak")
        }


def recurrent_counts(config: TrainConfig) -> tuple[int, int]:
    """(parameters, of which weights) of a recurrent network's layers and head, as nn.RNN,
    nn.LSTM and nn.GRU hold them: per layer W_ih (gates x hidden, inputs), W_hh (gates x hidden,
    hidden) and two biases (gates x hidden); the head's Linear (outputs, last width)."""
    gates, outputs = GATES[config.arch], sequences.outputs(config.dataset)
    sizes = (sequences.input_size(config), *config.hidden)
    weights = sum(
        gates * width * (fan_in + width)
        for fan_in, width in zip(sizes, config.hidden, strict=False)
    )
    weights += config.hidden[-1] * outputs
    return weights + sum(2 * gates * width for width in config.hidden) + outputs, weights


def parameter_counts(config: TrainConfig) -> tuple[int, int, int]:
    """(parameters, of which weights, buffer bytes) of one model of `config`: an MLP's
    Linear weights, a recurrent network's W_ih, W_hh and head weights (`recurrent_counts`).

    Norm and activation modules are built for each hidden width (on the meta device) and
    counted, so a new norm or parametrised activation is counted without a change here (a
    recurrent network's only such module: `LoopRNN`'s activation, where nn.RNN has none).
    """
    if config.arch in RECURRENT:
        parameters, weights = recurrent_counts(config)
        looped = config.arch == "rnn" and config.activation not in NATIVE
        make_norm = None
        widths = config.hidden if looped else ()
    else:
        sizes = (IN_FEATURES, *config.hidden, CLASSES)
        weights = sum(fan_in * fan_out for fan_in, fan_out in zip(sizes, sizes[1:], strict=False))
        parameters = weights + sum(sizes[1:])  # and a bias per unit
        make_norm = NORMS[config.norm]
        widths = config.hidden
    buffers = 0
    modules: dict[int, list[torch.nn.Module]] = {}
    for width in widths:
        if width not in modules:  # equal widths: built once
            # On the meta device: shapes without memory or arithmetic (no thread pool started in
            # a server's request thread, see live.jobs.Jobs), however wide.
            with torch.device("meta"):
                norm = [make_norm(width)] if make_norm is not None else []
                activation = make_activation(config.activation, width, config.options)
            modules[width] = [*norm, activation]
        for module in modules[width]:
            parameters += sum(p.numel() for p in module.parameters())
            buffers += sum(b.numel() * b.element_size() for b in module.buffers())
    return parameters, weights, buffers


def optimizer_state(config: TrainConfig) -> int:
    """State values per parameter that the config's optimizer keeps."""
    if config.optimizer == "sgd" and config.momentum == 0:
        return 0
    known = OPTIMIZERS.get(config.optimizer)
    return known.state if known else max(o.state for o in OPTIMIZERS.values())


def samples(config: TrainConfig, train_samples: int | None = None) -> tuple[int, int]:
    """Training and test examples a run of `config` trains and evaluates on: the first
    `--train-size` and `--test-size` of its data set's, whose training set has `train_samples`
    when the caller has loaded it, else its spec's count (a generated set's), else MNIST's."""
    spec = get_spec(config.dataset)
    if train_samples is None:
        counts = spec.train_counts
        train_samples = SIZES["train"] if spec.generated else sum(counts) or TRAIN_SAMPLES
    test = SIZES["test"] if spec.generated else TEST_SAMPLES
    train = min(train_samples, config.train_size or train_samples)
    return train, min(test, config.test_size or test)


def eval_rows(config: TrainConfig) -> int:
    """Rows per evaluation pass of a recurrent network (`train.eval_chunk`): as many as hold
    EVAL_VALUES values of its widest layer's output over T steps, at most EVAL_CHUNK."""
    return sequence_rows(sequences.steps(config), max(config.hidden))


def recurrent_passes(
    config: TrainConfig, k: int, batch_size: int, probe_size: int
) -> dict[str, int]:
    """The values of the passes of a recurrent network (`estimate`'s passes): K models' training
    batch and probe batch, with every time step kept, and an evaluation pass."""
    steps, features = sequences.steps(config), sequences.input_size(config)
    outputs = sequences.outputs(config.dataset)
    widest, units = max(config.hidden), sum(config.hidden)
    batch = k * batch_size * (steps * (features + units * FUSED[config.arch]) + 3 * outputs)
    probe = k * probe_size * (steps * (features + units * UNROLLED[config.arch]) + 2 * outputs)
    evaluation = eval_rows(config) * (steps * EVALUATED[config.arch] * widest + outputs)
    return {"batch": batch, "probe": probe, "evaluation": evaluation, "dead units": 0}


def estimate(config: TrainConfig, models: int = 1, train_samples: int | None = None) -> Estimate:
    """What training `config` needs on its device, K = `models` of it at once as a group, on a
    training set of `train_samples` images (None: the registered count); the module docstring
    says what is counted."""
    k = models
    train, test = samples(config, train_samples)
    batch_size, probe_size = min(config.batch_size, train), min(config.probe_size, train)
    parameters, weights, buffers = parameter_counts(config)
    if config.arch in RECURRENT:
        passes = recurrent_passes(config, k, batch_size, probe_size)
    else:
        passes = mlp_passes(config, k, batch_size, probe_size)
    # An example: its float32 inputs (784 features, or T steps of some) and its label (an int64
    # class, a regression's float32 target).
    label = FLOAT if sequences.task(config.dataset) == "regression" else INDEX
    example = sequences.steps(config) * sequences.input_size(config) * FLOAT + label
    data = (train + test) * example + k * (probe_size * example + train * INDEX)
    return Estimate(
        parameters=k * parameters * FLOAT,
        buffers=k * buffers,
        gradients=k * parameters * FLOAT,
        optimizer_state=k * optimizer_state(config) * parameters * FLOAT,
        probe_copies=k * weights * FLOAT,
        activations=max(passes.values()) * FLOAT,
        data=data,
        models=k,
        peak=max(passes, key=lambda name: passes[name]),
    )


def mlp_passes(config: TrainConfig, k: int, batch_size: int, probe_size: int) -> dict[str, int]:
    """The values of the passes of an MLP (`estimate`'s passes): K models' training batch and
    probe batch, an evaluation chunk and a rectifier's dead-unit chunk."""
    hidden, widest = sum(config.hidden), max(config.hidden)
    norm = int(config.norm != "none")
    # Per hidden unit, the (batch, width) tensors a pass with grad keeps: the activation's input
    # and output, the Linear's output before a norm, the sum around a skip.
    kept = 2 + norm + int(config.residual)
    batch = k * batch_size * (IN_FEATURES + hidden * kept + 2 * widest + 3 * CLASSES)
    probe = k * probe_size * (hidden * (kept + 1) + 2 * CLASSES)  # +1: the backward's
    # The chunks' inputs are views of the data: only the layers' outputs are new.
    evaluation = EVAL_CHUNK * ((3 + int(config.residual)) * widest + CLASSES)
    dead = 0
    if get_activation(config.activation).family == "rectifier":  # only they run dead_units
        # forward_hidden keeps each layer's activation input and output (and a skip's sum);
        # the previous chunk's outputs are still referenced while the next is computed.
        dead = DEAD_CHUNK * hidden * (3 + int(config.residual))
    return {"batch": batch, "probe": probe, "evaluation": evaluation, "dead units": dead}


def meminfo_available(root: Path = Path("/")) -> int | None:
    """/proc/meminfo's MemAvailable (free memory and what the kernel can reclaim), in bytes."""
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                return int(value.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_int(path: Path) -> int | None:
    """An integer file of the cgroup tree; None when absent, unreadable or `max` (no limit)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def inactive_file(path: Path, key: str) -> int:
    """Page cache that the kernel drops before it kills (memory.stat's `key`): not in use."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_available(root: Path = Path("/")) -> int | None:
    """The least room left under this process's cgroup memory limits (its own and its
    ancestors'), limit less usage less reclaimable page cache; None without a limit.

    cgroup v2: memory.max and memory.current; v1: memory.limit_in_bytes and usage_in_bytes.
    A container usually sees its own cgroup as the mount's root; both places are tried.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    layouts = []  # (mount, own path, limit file, usage file, memory.stat key)
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            layouts.append(("sys/fs/cgroup", path, "memory.max", "memory.current", "inactive_file"))
        elif "memory" in controllers.split(","):
            v1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
            layouts.append(("sys/fs/cgroup/memory", path, *v1))
    rooms = []
    for mount, path, limit_name, usage_name, cache_key in layouts:
        parts = Path(path.lstrip("/")).parts
        folders = [root / mount / Path(*parts[:i]) for i in range(len(parts), -1, -1)]
        for folder in dict.fromkeys(folders):  # own cgroup first, then up to the mount's root
            limit, usage = read_int(folder / limit_name), read_int(folder / usage_name)
            if limit is not None and usage is not None:
                usage -= inactive_file(folder / "memory.stat", cache_key)
                rooms.append(max(0, limit - max(0, usage)))
    return min(rooms) if rooms else None


def available(device: torch.device | str) -> int | None:
    """Bytes free for a run on `device`, None when it cannot be known (then nothing is refused).

    CUDA: the GPU's free memory, plus what this process's allocator holds unused. CPU: the
    smaller of MemAvailable and the room under a cgroup limit, else the free pages. MPS: None
    (unified memory, no free figure).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    known = [room for room in (meminfo_available(), cgroup_available()) if room is not None]
    if known:
        return min(known)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):  # not a POSIX system
        return None


def size(count: float) -> str:
    """Bytes in decimal units, as a disk or `free -h --si` writes them: 320.4 GB, 512 B."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def architecture(config: TrainConfig) -> str:
    """The layer widths, e.g. 784-520-320-240-120-10, or 784-256x30-10 for a deep equal stack;
    a recurrent network's with its steps and features per step first: lstm 784x1-128-10."""
    if config.arch in RECURRENT:
        first = f"{config.arch} {sequences.steps(config)}x{sequences.input_size(config)}"
    else:
        first = str(IN_FEATURES)
    words, run = [first], 0
    hidden = config.hidden
    for i, width in enumerate(hidden):
        run += 1
        if i + 1 == len(hidden) or hidden[i + 1] != width:
            many = run >= RUNS_IN_A_ROW
            words += [f"{width}x{run}"] if many else [str(width)] * run
            run = 0
    return "-".join([*words, str(sequences.outputs(config.dataset))])


def advice(one: Estimate, free: int) -> str:
    """What to change when one run needs more than `free` bytes: the part that dominates.

    The data set cannot be made smaller: when it alone does not fit, the device is too small.
    Otherwise the largest of what scales with the layers (parameters, their gradients, optimizer
    state and probe copies, the evaluation and dead-unit chunks), the training batch's
    activations and the probe batch's.
    """
    if one.data > free:
        return "the data set itself does not fit; use a device with more memory"
    layers = one.parameters + one.buffers + one.gradients + one.optimizer_state
    layers += one.probe_copies + (one.activations if one.peak not in ("batch", "probe") else 0)
    batch = one.activations if one.peak == "batch" else 0
    probe = one.activations if one.peak == "probe" else 0
    largest = max(layers, batch, probe)
    if largest == layers:
        return "use fewer or narrower layers"
    return "use a smaller --batch-size" if largest == batch else "use a smaller --probe-size"


def check_fits(
    configs: Sequence[TrainConfig],
    device: torch.device | str,
    models: int = 1,
    workers: int = 1,
    *,
    train_samples: int | None = None,
    reserved: int = 0,
) -> None:
    """Refuse (UsageError, one line) when `workers` units of `models` runs of the largest of
    `configs`, trained at once on `device`, would need more memory than it has available.
    `train_samples`: the training set's size when the caller has loaded it (None: the size its
    spec registers); batches and probe batches are capped at it. `reserved`: bytes that runs
    already training beside these (the live server's other jobs) need on the device, set aside
    first (counted in full: what they hold now is not known apart from the rest).

    The message names the smallest thing that does not fit: one run (then what dominates it,
    `advice`), else the group (then fewer at once), else the units trained at once (fewer
    workers).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    free = available(device)
    if free is None or not configs:
        return
    unit, config = max(
        ((estimate(c, models, train_samples), c) for c in configs), key=lambda e: e[0].total
    )
    room = max(0, free - reserved)
    if unit.total * workers <= room:
        return
    if unit.total * workers <= free:  # it would fit, but for the runs already training
        raise UsageError(
            f"these runs of {architecture(config)} need about {size(unit.total * workers)}, "
            f"more than the {size(room)} of memory available on {device} once the "
            f"{size(reserved)} that the runs already training need is set aside; wait for them "
            "to finish, or stop one"
        )
    one, shape = estimate(config, train_samples=train_samples), architecture(config)

    def about(estimate: Estimate, times: int = 1) -> str:
        parts = ", ".join(f"{name} {size(b)}" for name, b in estimate.parts().items() if b)
        each = f"{size(estimate.total)} each: " if times > 1 else ""
        return f"about {size(estimate.total * times)} ({each}{parts})"

    if one.total > free:
        what, change = f"a run of {shape} needs {about(one)}", advice(one, free)
    elif unit.total > free:
        what = f"a group of {models} runs of {shape} needs {about(unit)}"
        change = "train fewer at once (--no-group)"
    else:
        units = f"groups of {models} runs" if models > 1 else "runs"
        what = f"{workers} {units} of {shape} training at once need {about(unit, workers)}"
        change = f"train fewer at once (at most --workers {free // unit.total})"
    raise UsageError(
        f"{what}, more than the {size(free)} of memory available on {device}; {change}"
    )
