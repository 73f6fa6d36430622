"""Which layers a watch measures, and their names: the weighted modules, the activation modules
and the functional activations found as the model runs, in the order it runs them, each
activation layer labelled by the weighted layer before it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vanishing.errors import UsageError
from vanishing.model.activations import ACTIVATIONS, DEFAULT_OPTIONS, Activation, activation_of

# Layers that normalise: a sentence names the layer before one (its conv), never the norm.
NORMS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
# Activation modules the registry does not build, known by their class name: Hugging Face's
# GELUs (GPT-2's gelu_new is NewGELUActivation: 0.5 x (1 + tanh(...)), its tanh no layer of its
# own) and SiLU. A function called inside any activation module's forward is not a layer.
ACTIVATION_CLASSES = {
    "NewGELUActivation": "gelu",
    "GELUActivation": "gelu",
    "FastGELUActivation": "gelu",
    "QuickGELUActivation": "gelu",
    "GELUTanh": "gelu",
    "PytorchGELUTanh": "gelu",
    "AccurateGELUActivation": "gelu",
    "SiLUActivation": "silu",
}
RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)
CONVS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def model_name(model: nn.Module) -> str:
    """The model's class name: FSDP2's `fully_shard` gives a model a class of its own
    ("FSDPSequential", a subclass of FSDPModule and of the model's class): the model's own."""
    for cls in type(model).__mro__:
        if not any(base.__name__ == "FSDPModule" for base in cls.__mro__):
            return cls.__name__
    return type(model).__name__


def weights_of(module: nn.Module) -> list[nn.Parameter]:
    """A module's own trainable weights, its biases left out: `weight`, a recurrent layer's
    `weight_ih_l0`..., attention's `in_proj_weight`."""
    return [
        p for n, p in module.named_parameters(recurse=False) if "weight" in n and p.requires_grad
    ]


def module_activation(module: nn.Module) -> Activation | None:
    """The registry entry an activation module computes: its own (`activation_of`), or by its
    class name (`ACTIVATION_CLASSES`); None for any other module."""
    found = activation_of(module)
    if found is None and type(module).__name__ in ACTIVATION_CLASSES:
        return ACTIVATIONS[ACTIVATION_CLASSES[type(module).__name__]]
    return found


def recurrent_layers(name: str, module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """A recurrent module's layers, each its own ("lstm.l0", "lstm.l1"): layer k's
    weight_ih_lk and weight_hh_lk (and their _reverse twins), so a stacked LSTM's layers are not
    one norm."""
    layers: dict[str, list[nn.Parameter]] = {}
    for weight_name, weight in module.named_parameters(recurse=False):
        if "weight" in weight_name and weight.requires_grad:
            layer = weight_name.split("_l")[-1].removesuffix("_reverse")
            layers.setdefault(f"{name}.l{layer}", []).append(weight)
    return layers


def recurrent_kind(module: nn.Module) -> str:
    """The activation a recurrent module's output passes: tanh (an LSTM's h = o * tanh(c), a
    GRU's and nn.RNN's default), or nn.RNN's nonlinearity."""
    return str(getattr(module, "nonlinearity", "tanh")) if isinstance(module, nn.RNN) else "tanh"


def layer_weights(name: str, module: nn.Module) -> list[nn.Parameter]:
    """A watched layer's weights: a recurrent layer's ("lstm.l1") or a module's own."""
    if isinstance(module, RECURRENT):
        return recurrent_layers(name.rsplit(".l", 1)[0], module).get(name, [])
    return weights_of(module)


def joint_norm(tensors: Sequence[Tensor]) -> Tensor:
    """The L2 norm of several tensors taken as one vector (one tensor's own norm)."""
    if len(tensors) == 1:
        return tensors[0].detach().float().norm()
    return torch.stack([t.detach().float().norm() for t in tensors]).norm()


def unit_dim(output: Tensor, before: nn.Module | None) -> int:
    """Which dimension of an activation's output holds its units: dim 1 for a (batch,
    features) output and for a conv's (batch, channels, ...) maps; the last one for a
    sequence's (batch, time, features), as a Linear applied along a sequence makes."""
    if output.dim() <= 2 or isinstance(before, CONVS) or output.dim() >= 4:
        return 1
    return output.dim() - 1


def twin_module(
    activation: Activation, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> nn.Module:
    """The module a functional activation call computes, for its slope (the saturation test):
    its arguments as the module's (F.leaky_relu(x, 0.2) is nn.LeakyReLU(0.2))."""
    given = dict(zip(("negative_slope", "alpha", "beta", "threshold"), args[1:], strict=False))
    given.update(kwargs)
    if activation.name == "leaky_relu":
        return nn.LeakyReLU(given.get("negative_slope", 0.01))
    if activation.name == "elu":
        return nn.ELU(given.get("alpha", 1.0))
    if activation.name == "gelu":
        return nn.GELU(approximate=given.get("approximate", "none"))
    if activation.name == "softplus":
        return nn.Softplus(given.get("beta", 1.0), given.get("threshold", 20.0))
    return activation.build(1, DEFAULT_OPTIONS)


def expand(model: nn.Module, chosen: list[str]) -> list[str]:
    """`layers=` names, a recurrent module's name ("lstm") standing for each of its layers."""
    stacks = {
        name.removeprefix("_orig_mod."): list(recurrent_layers(name, module))
        for name, module in model.named_modules()
        if isinstance(module, RECURRENT)
    }
    return [layer for name in chosen for layer in stacks.get(name, [name])]


def select(
    model: nn.Module, chosen: list[str] | None
) -> tuple[dict[str, nn.Module], dict[str, tuple[nn.Module, Activation]]]:
    """The weighted modules and the activation modules to watch, by name."""
    weighted: dict[str, nn.Module] = {}
    activations: dict[str, tuple[nn.Module, Activation]] = {}
    for full_name, module in model.named_modules():
        name = full_name.removeprefix("_orig_mod.")  # torch.compile's wrapper: not a layer
        activation = module_activation(module)
        if activation is not None:
            activations[name] = (module, activation)
        elif isinstance(module, RECURRENT):
            weighted.update({layer: module for layer in recurrent_layers(name, module)})
        elif weights_of(module):
            weighted[name] = module
    if chosen is not None:
        known = {*weighted, *activations}
        unknown = [name for name in chosen if name not in known]
        if unknown:
            shown = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "")
            raise UsageError(
                f"watch: no layer {unknown[0]!r} with a trainable weight or a known "
                f"activation in {type(model).__name__}; choose from: {shown}"
            )
        if any(name in weighted for name in chosen):  # else every weighted one
            weighted = {n: m for n, m in weighted.items() if n in chosen}
        if any(name in activations for name in chosen):
            activations = {n: a for n, a in activations.items() if n in chosen}
    if not weighted:
        raise UsageError(
            f"watch: {type(model).__name__} has no module with a trainable weight to watch"
        )
    return weighted, activations


class Layers:
    """A watched model's layers: chosen from its modules at the start, completed by the
    activation layers its first measured forwards run (functional activations, second calls of
    a module), and fixed, in the order they ran, by the first row."""

    def __init__(self, model: nn.Module, layers: Iterable[str] | None) -> None:
        self.chosen = None if layers is None else expand(model, list(layers))
        self.weighted, self.activations = select(model, self.chosen)
        # The watched weights, by their layer's name. A weight two modules share (a tied
        # embedding and output layer) is, once the order they ran in is known (`fix`), the last
        # one's: the module that computes the output is the output layer.
        self.weights: dict[str, list[nn.Parameter]] = {}
        for name, module in list(self.weighted.items()):
            own = layer_weights(name, module)
            if own:
                self.weights[name] = own
            else:
                del self.weighted[name]
        # The recurrent modules (nn.RNN, LSTM, GRU) with a watched layer: each gets its time
        # profile, by its name ("encoder.lstm").
        self.recurrent = {
            name.rsplit(".l", 1)[0]: module
            for name, module in self.weighted.items()
            if isinstance(module, RECURRENT)
        }
        self.tied: dict[str, list[str]] = {}  # layer -> the layers whose weight it took over
        self.residual = False  # a measured forward added a layer's input to a later output
        self.inputs: set[int] = set()  # ids of the tensors weighted layers took this forward
        self.hooked = dict(self.activations)  # the activation modules, hooked when measuring
        self.twins = {f: a for a in ACTIVATIONS.values() for f in a.twins}
        self.order: list[str] = []  # module names in the order the first measured forward ran
        self.follows: dict[str, str] = {}  # activation layer -> the weighted layer before it
        self.units: dict[str, int] = {}  # activation layer -> the dim of its units
        self.widths: dict[str, int] = {}  # activation layer -> its units
        self.sequences: set[str] = set()  # activation layers whose output is a sequence
        self.fixed_layers: list[str] = []  # fixed by the first row, as config.json lists them
        self.fixed_activations: list[str] = []
        # The measured forward under way: the last weighted layer it ran, the calls of each
        # activation module, its functional activations so far, and how many activation
        # modules are running (their own F.relu is not another activation).
        self.last_weighted: str | None = None
        self.last_weighted_module: nn.Module | None = None
        self.module_calls: dict[str, int] = {}
        self.calls, self.inside = 0, 0

    def forward_starts(self) -> None:
        """A measured forward begins: its calls are counted afresh."""
        self.calls, self.inside = 0, 0
        self.module_calls.clear()
        self.inputs.clear()

    def seen(self, name: str) -> None:
        if not self.fixed_layers and name not in self.order:  # fixed by the first row
            self.order.append(name)

    def weighted_ran(self, name: str, module: nn.Module, args: Any = ()) -> None:
        """A weighted layer ran in a measured forward: the activations after it follow it (a
        norm layer aside: a sentence names its conv); its input is kept, to see a residual."""
        self.seen(name)
        if args and isinstance(args[0], Tensor):
            self.inputs.add(id(args[0]))
        if not isinstance(module, NORMS):
            self.last_weighted, self.last_weighted_module = name, module

    def may_add(self, layer: str) -> bool:
        """Whether an activation layer found as the model runs is one to measure: not once the
        first row has fixed the layers, nor when `layers` chose others."""
        return not self.fixed_layers and (self.chosen is None or layer in self.chosen)

    def module_layer(self, name: str, module: nn.Module, activation: Activation) -> str | None:
        """The activation layer a call of the module `name` is (a module called again is one
        more, "act#2"), None when it is not measured."""
        calls = self.module_calls[name] = self.module_calls.get(name, 0) + 1
        layer = name if calls == 1 else f"{name}#{calls}"
        if layer not in self.activations and self.may_add(layer):
            self.activations[layer] = (module, activation)
        return layer if layer in self.activations else None

    def added(self, args: tuple[Any, ...]) -> None:
        """A measured forward added two tensors: a residual connection (x + f(x)) when one is
        the input a weighted layer took in this forward and both have the same shape."""
        if (
            len(args) >= 2
            and isinstance(args[0], Tensor)
            and isinstance(args[1], Tensor)
            and args[0].shape == args[1].shape
            and (id(args[0]) in self.inputs or id(args[1]) in self.inputs)
        ):
            self.residual = True

    def function_layer(
        self, function: Callable[..., Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, nn.Module, Activation] | None:
        """The activation layer a torch function call is, when it is an activation's
        functional twin (F.relu, torch.sigmoid, x.tanh(), ...) called outside an activation
        module; named by its order in the forward ("relu#2"). None otherwise."""
        activation = self.twins.get(function)
        if activation is None or self.inside:
            return None
        self.calls += 1
        name = f"{activation.name}#{self.calls}"  # the k-th functional activation of a forward
        if name not in self.activations and self.may_add(name):
            self.activations[name] = (twin_module(activation, function, args, kwargs), activation)
        if name not in self.activations:
            return None
        return name, self.activations[name][0], activation

    def activation_ran(self, name: str, output: Tensor) -> int:
        """An activation layer's output in a measured forward: its place in the order, its
        width, the weighted layer it follows; the dim of its units."""
        self.seen(name)
        dim = self.units.setdefault(name, unit_dim(output, self.last_weighted_module))
        self.widths.setdefault(name, int(output.shape[dim]))
        if output.dim() == 3 and dim == 2:  # (batch, time, features): every position
            self.sequences.add(name)
        if self.last_weighted is not None:
            self.follows.setdefault(name, self.last_weighted)
        return dim

    def fix(self) -> None:
        """The layers and activation layers of every row, in the order the model ran them,
        fixed by the first row. A weighted module whose forward did not run (attention's
        out_proj, used by its parent's weights) goes after its parent."""
        if self.fixed_layers:
            return
        ran = [name for name in self.order if name in self.weighted]
        for name in self.weighted:
            if name in ran:
                continue
            parents = [i for i, other in enumerate(ran) if name.startswith(f"{other}.")]
            ran.insert(max(parents) + 1 if parents else len(ran), name)
        self.fixed_layers = ran
        self.untie(ran)
        # No measured forward before the first row (the model ran inside step(), or only in
        # evaluation): the activation modules found, in the model's order, not none at all.
        self.fixed_activations = [n for n in self.order if n in self.activations] or list(
            self.hooked
        )

    def untie(self, ran: list[str]) -> None:
        """Each weight two layers share goes to the one that ran last (lm_head, not the
        embedding it is tied to); a layer left without a weight is no longer one."""
        users: dict[int, list[str]] = {}
        for name in ran:
            for weight in self.weights[name]:
                users.setdefault(id(weight), []).append(name)
        for key, names in users.items():
            for other in names[:-1]:
                tied = self.tied.setdefault(names[-1], [])
                tied.extend([other] if other not in tied else [])
                self.weights[other] = [w for w in self.weights[other] if id(w) != key]
        for name in [n for n in ran if not self.weights[n]]:
            del self.weights[name], self.weighted[name]
            self.fixed_layers.remove(name)

    def labels(self) -> list[str]:
        """Per activation layer, its name in sentences: the weighted layer before it, with the
        activation's own name where two follow the same one ("fc (relu#1)")."""
        acts = self.fixed_activations
        follows = [self.follows.get(name, name) for name in acts]
        return [
            f"{label} ({name})" if follows.count(label) > 1 else label
            for label, name in zip(follows, acts, strict=True)
        ]
