"""Where an epoch's time goes: matmul rate and its limit, reference loop, single path, groups.

Run: .venv/bin/python bench/bench_speed.py [--device cpu|cuda] [--ks 4,16] [--epochs-fraction 0.1]
     [--compile] [--workers 2]
On a GPU, one short run prints every figure the performance targets need:
     .venv/bin/python bench/bench_speed.py --device cuda --ks 4,16,64 --compile
Everything is timed in this one process, the variants in turn for --repeats rounds, keeping each
one's best: on a shared machine every variant sees the same load. A fraction of an epoch is timed
and extrapolated to a whole one; the slice probes every 300 * f steps, so it holds as many probe
points as a whole epoch, and their seconds are counted once. Test-set evaluation is not timed
(and cut to 1000 images). Besides the trainer's own paths it times torch.compile (--compile),
CUDA-graph capture of the whole step (CUDA only), W one-thread processes at once (CPU only, as
`vanishing sweep` runs), and the floor the targets meet: matmuls at the measured rate plus the
fused Adam step, nothing else. A variant that fails prints its error; the others still run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.nn import functional as F

from vanishing import records
from vanishing.data.datasets import Dataset, load_dataset
from vanishing.devices import resolve_device, sync
from vanishing.executor import Policy, Run, execute
from vanishing.measure.probes import per_sample_loss
from vanishing.model.mlp import build_model, make_optimizer
from vanishing.settings.config import TrainConfig
from vanishing.training.group import GroupedMLP, train_group
from vanishing.training.loop import to_inputs, train

sys.path.insert(0, str(Path(__file__).parent))
from bench_epoch import reference_epoch  # noqa: E402

SAMPLES = 60000
PROBE_EVERY = TrainConfig.probe_every  # the default interval, scaled down for a slice


def layer_shapes(hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every Linear layer."""
    sizes = (784, *hidden, 10)
    return list(zip(sizes, sizes[1:], strict=False))


def epoch_flops(hidden: tuple[int, ...], samples: int = SAMPLES) -> tuple[float, float]:
    """Multiply-add FLOPs of an epoch: (3 x forward, exact) - exact skips layer 1's input grad."""
    macs = sum(i * o for i, o in layer_shapes(hidden))  # per sample, forward
    first = 784 * hidden[0]
    forward = 2 * macs * samples
    exact = forward + 2 * macs * samples + 2 * (macs - first) * samples  # fwd, dW, dX (not dX_1)
    return 3 * forward, exact


def timed(fn, device: torch.device, repeats: int) -> float:
    """Seconds per call of fn, after one warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def matmul_rates(
    device: torch.device, square: int, hidden: tuple[int, ...], batch: int
) -> tuple[float, float]:
    """Print GFLOP/s of a large square product and of the MLP's batch-64 products; return the
    limit per epoch (seconds of matmuls alone) at each rate."""
    a = torch.randn(square, square, device=device)
    b = torch.randn(square, square, device=device)
    seconds = timed(lambda: a @ b, device, 3 if device.type == "cpu" else 20)
    square_rate = 2 * square**3 / seconds
    print(f"matmul {square}x{square} float32          {square_rate / 1e9:9.1f} GFLOP/s")
    # One training step's products at batch 64: forward, weight gradient, input gradient.
    products = []
    for layer, (i, o) in enumerate(layer_shapes(hidden)):
        x, w, d = (torch.randn(*s, device=device) for s in ((batch, i), (i, o), (batch, o)))
        products += [(x, w), (x.T, d)] + ([(d, w.T)] if layer > 0 else [])
    step_flops = sum(2 * p.shape[0] * p.shape[1] * q.shape[1] for p, q in products)
    seconds = timed(lambda: [p @ q for p, q in products], device, 200)
    step_rate = step_flops / seconds
    steps = -(-SAMPLES // batch)
    print(f"matmul, one step's batch-{batch} products  {step_rate / 1e9:9.1f} GFLOP/s "
          f"({len(products)} products, {seconds * 1e6:.0f} us per step)")  # fmt: skip
    three, exact = epoch_flops(hidden)
    print(f"epoch FLOPs: 3 x forward {three / 1e9:.1f} GFLOP, exact {exact / 1e9:.1f} GFLOP "
          f"(no input gradient for layer 1)")  # fmt: skip
    limit = seconds * steps
    print(f"limit per epoch: {exact / square_rate:6.2f} s at the square rate, {limit:6.2f} s "
          f"at the batch-{batch} rate ({steps} steps, matmuls only)")  # fmt: skip
    return exact / square_rate, limit


def subset(dataset: Dataset, fraction: float, test: int = 1000) -> Dataset:
    """The first `fraction` of the training set and `test` test images (evaluation is untimed)."""
    m = max(1, round(fraction * len(dataset.train_labels)))
    return dataclasses.replace(
        dataset,
        train_images=dataset.train_images[:m],
        train_labels=dataset.train_labels[:m],
        test_images=dataset.test_images[:test],
        test_labels=dataset.test_labels[:test],
    )


def vmap_seconds(config: TrainConfig, dataset: Dataset, k: int, device: torch.device) -> float:
    """Seconds for the slice with torch.func: vmap(grad) over K stacked copies, fused Adam."""
    models = [build_model(config.hidden, config.activation, seed=s).to(device) for s in range(k)]
    params, buffers = stack_module_state(models)  # name -> (K, ...)
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    step_fn = vmap(grad_and_value(loss))
    optimizer = make_optimizer(config.optimizer, params.values(), config.lr, config.momentum)
    x_train = to_inputs(dataset.train_images, device)
    y_train = dataset.train_labels.to(device)
    n = len(x_train)
    generators = [torch.Generator().manual_seed(s) for s in range(k)]
    order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
    loss_sum = torch.zeros(k, device=device)
    sync(device)
    start = time.perf_counter()
    for begin in range(0, n, config.batch_size):
        index = order[:, begin : begin + config.batch_size]
        grads, losses = step_fn(params, buffers, x_train[index], y_train[index])
        for name, p in params.items():
            p.grad = grads[name]
        optimizer.step()
        loss_sum += losses.detach()
    sync(device)
    return time.perf_counter() - start


def loop_seconds(
    config: TrainConfig, dataset: Dataset, k: int, device: torch.device, mode: str
) -> float:
    """Seconds for the slice in a bare loop (no probes, no records, full batches only): one MLP
    (K = 1) or a `GroupedMLP` of K, fused Adam, per-model data orders.

    mode `compile`: the loss (forward, and through AOTAutograd the backward) is `torch.compile`d.
    mode `cudagraph`: the whole step (gather, forward, backward, Adam with capturable=True) is
    captured once as a CUDA graph and replayed; each step only copies the next batch's indices.
    """
    models = [build_model(config.hidden, config.activation, seed=s) for s in range(k)]
    net = (models[0] if k == 1 else GroupedMLP.from_models(models)).to(device)
    graphed = mode == "cudagraph"
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, fused=True, capturable=graphed)
    x_train = to_inputs(dataset.train_images, device)
    y_train = dataset.train_labels.to(device)
    n, batch = len(x_train), config.batch_size
    generators = [torch.Generator().manual_seed(s) for s in range(k)]
    order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
    if k == 1:
        order = order[0]

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        x, y = x_train[index], y_train[index]  # (batch, 784) or (K, batch, 784)
        if k == 1:
            return F.cross_entropy(net(x), y)
        return per_sample_loss(net(x), y).mean(dim=1).sum()  # a sum: each model its own loss

    loss_fn = torch.compile(loss_of) if mode == "compile" else loss_of
    static_index = order[..., :batch].clone()

    def step() -> None:
        loss_fn(static_index).backward()
        optimizer.step()

    steps = n // batch
    if graphed:  # the recipe of PyTorch's CUDA graphs notes: warm up on a side stream, capture
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            step()  # backward writes fresh .grad tensors in the graph's pool: no zero_grad
        run_step = graph.replay
    else:

        def run_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            step()

        for _ in range(3):  # warm-up (and, compiled, the compilation)
            run_step()
    sync(device)
    start = time.perf_counter()
    for begin in range(0, steps * batch, batch):
        static_index.copy_(order[..., begin : begin + batch])
        run_step()
    sync(device)
    return time.perf_counter() - start


def workers_seconds(config: TrainConfig, data: Dataset, workers: int) -> list[float]:
    """Training seconds of each of `workers` runs of the same slice trained all at once, each in
    a child process of one thread: through the executor (`runs.execute`), the very path `compare`
    and `sweep` spend the CPU's cores on, so the figure is theirs, records written included. The
    runs' directories are temporary; each one's seconds are read back from its result."""
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        # Probes off (in `config`): only the step-0 probe, whose seconds are not counted.
        todo = [
            Run(dataclasses.replace(config, seed=seed), Path(tmp) / f"seed{seed}")
            for seed in range(workers)
        ]
        execute(todo, Policy(workers=workers, threads=1), dataset=data)
        return [records.load_result(run.config, run.run_dir).train_seconds for run in todo]


def adam_seconds(hidden: tuple[int, ...], k: int, device: torch.device) -> float:
    """Seconds of one fused Adam step over K models' parameters (memory-bound: 7 floats read or
    written per parameter)."""
    count = sum(i * o + o for i, o in layer_shapes(hidden))
    weight = torch.nn.Parameter(torch.randn(k, count, device=device))
    weight.grad = torch.randn_like(weight)
    optimizer = torch.optim.Adam([weight], lr=1e-3, fused=True)
    return timed(optimizer.step, device, 20)


def peak_memory(device: torch.device) -> float:
    """Peak memory in MiB: the GPU allocator's since the last reset, or the process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def variants(args, config: TrainConfig, data: Dataset, device: torch.device) -> dict:
    """Name -> a function timing one slice, returning seconds per epoch (a group's wall time)."""
    no_probes = dataclasses.replace(config, probe_every=10**9)  # only the step-0 probe
    names = args.activations.split(",")
    fraction = args.epochs_fraction
    steps = math.ceil(len(data.train_labels) / config.batch_size)
    # The slice holds as many probe points as a whole epoch (every 300 of 938 steps: 4), so their
    # seconds count once, not 1 / fraction times.
    probes_per_epoch = math.ceil(math.ceil(SAMPLES / config.batch_size) / PROBE_EVERY)
    probe_scale = probes_per_epoch / math.ceil(steps / config.probe_every)

    def epoch(result, k: int = 1, name: str | None = None) -> float:
        # Each model of a group records the group's wall time / K.
        train_seconds, probe_seconds = result.train_seconds / fraction, result.probe_seconds
        if name is not None:  # the probes' own share, timed inside the run (see `main`)
            share = probe_seconds * probe_scale / train_seconds
            args.probe_shares[name] = min(args.probe_shares.get(name, math.inf), share)
        return k * (train_seconds + probe_seconds * probe_scale)

    runs = {
        "reference": lambda: reference_epoch(config, data) / fraction,
        "single": lambda: epoch(train(no_probes, dataset=data)),
        "single+probes": lambda: epoch(train(config, dataset=data), 1, "single"),
    }
    for k in args.ks:
        configs = [
            dataclasses.replace(config, activation=names[i % len(names)], seed=i) for i in range(k)
        ]
        plain = [dataclasses.replace(c, probe_every=no_probes.probe_every) for c in configs]
        runs[f"group{k}"] = lambda c=plain: epoch(train_group(c, dataset=data)[0], len(c))
        runs[f"group{k}+probes"] = lambda c=configs, k=k: epoch(
            train_group(c, dataset=data)[0], len(c), f"group{k}"
        )
        if not args.no_vmap:
            runs[f"vmap{k}"] = lambda k=k: vmap_seconds(no_probes, data, k, device) / fraction
    modes = (["compile"] if args.compile else []) + (["cudagraph"] if device.type == "cuda" else [])
    for mode in modes:
        for k in (1, max(args.ks)):
            runs[f"{mode}{k}"] = lambda k=k, m=mode: (
                loop_seconds(config, data, k, device, m) / fraction
            )
    if device.type == "cpu" and args.workers > 1:

        def pool() -> float:
            """Seconds W model-epochs take the pool: W / (the sum of the workers' rates)."""
            seconds = workers_seconds(no_probes, data, args.workers)
            return args.workers / sum(fraction / s for s in seconds)

        runs["workers"] = pool
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--ks", help="group sizes (default: 4,16 on the CPU, 4,16,64 on a GPU)")
    parser.add_argument("--activations", default="relu", help="cycled over a group's models")
    parser.add_argument("--epochs-fraction", type=float, default=0.05, help="share of an epoch")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the best of each is kept")
    parser.add_argument("--square", type=int, help="square matmul size (2048 CPU, 8192 GPU)")
    parser.add_argument("--no-vmap", action="store_true", help="skip the torch.func variant")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile (slow to warm up)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU only: also time this many one-thread processes at once (default: the cores)",
    )
    args = parser.parse_args()
    args.probe_shares = {}  # variant -> the probes' share of its training time, in the run
    device = resolve_device(args.device)
    gpu = device.type != "cpu"
    args.ks = [int(k) for k in (args.ks or ("4,16,64" if gpu else "4,16")).split(",")]
    fraction = args.epochs_fraction
    if not 0 < fraction <= 1:
        parser.error("--epochs-fraction must be in (0, 1]")
    config = TrainConfig(
        activation=args.activations.split(",")[0],
        epochs=1,
        device=str(device),
        probe_every=max(1, round(PROBE_EVERY * fraction)),
    )
    gpu_name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}"
          f"{gpu_name}, 784-{'-'.join(map(str, config.hidden))}-10, {config.optimizer}, "
          f"batch {config.batch_size}; timing {fraction:g} of an epoch x {args.repeats} rounds "
          f"(best kept), per-epoch figures extrapolated")  # fmt: skip
    square_limit, batch_limit = matmul_rates(
        device, args.square or (8192 if gpu else 2048), config.hidden, config.batch_size
    )

    data = subset(load_dataset(config.dataset), fraction)
    train(config, dataset=subset(data, 0.05))  # warm-up
    runs = variants(args, config, data, device)
    best = dict.fromkeys(runs, float("inf"))
    memory = dict.fromkeys(runs, 0.0)
    failed: dict[str, str] = {}
    for round_ in range(args.repeats):
        for name, run in runs.items():
            if name in failed or (round_ and name.startswith("compile")):
                continue  # compiling again would take longer than all the rest: one round
            reset_peak(device)
            try:
                best[name] = min(best[name], run())  # seconds per epoch (wall)
            except Exception as e:  # one variant that fails here must not hide the others
                failed[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:120]}"
            memory[name] = max(memory[name], peak_memory(device))

    unit = "GPU allocated peak" if device.type == "cuda" else "process max RSS so far"
    single = best["single"]

    def line(label: str, name: str, k: int = 1) -> None:
        if name not in runs:
            return
        if name in failed:
            print(f"{label:<34} failed: {failed[name]}")
            return
        print(f"{label:<34} {best[name]:8.2f} s/epoch {k / best[name]:8.3f} model-epochs/s "
              f"{k * single / best[name]:6.2f}x single   {memory[name]:6.0f} MiB")  # fmt: skip

    print(f"{'':<34} {'wall':>8}         {'':>8} {'':>15} {'':>6}   ({unit})")
    line(f"reference DataLoader loop ({device.type})", "reference")
    line("single model, probes off", "single")
    line(f"single model, probes every {PROBE_EVERY}", "single+probes")
    for k in args.ks:
        line(f"group K={k}, probes off", f"group{k}", k)
        line(f"group K={k}, probes every {PROBE_EVERY}", f"group{k}+probes", k)
        if not args.no_vmap:
            line(f"torch.func vmap K={k} (no probes)", f"vmap{k}", k)
    top = max(args.ks)
    line("single model, torch.compile", "compile1")
    line(f"group K={top}, torch.compile", f"compile{top}", top)
    line("single model, CUDA graph", "cudagraph1")
    line(f"group K={top}, CUDA graph", f"cudagraph{top}", top)
    line(f"{args.workers} processes x 1 thread (single)", "workers", args.workers)
    # Timed inside the probed runs (their probes' seconds against their training seconds), so
    # machine noise between two runs cancels; the difference between the runs is printed too.
    overheads = [("single", "single+probes")] + [(f"group{k}", f"group{k}+probes") for k in args.ks]
    print("probe overhead, timed in the run: " + ", ".join(
        f"{plain} {100 * share:.1f} %" for plain, share in args.probe_shares.items()
    ) + "; between the runs: " + ", ".join(
        f"{plain} {100 * (best[probed] - best[plain]) / best[plain]:+.1f} %"
        for plain, probed in overheads if plain not in failed and probed not in failed
    ))  # fmt: skip
    if "reference" in failed or "single" in failed:
        return
    # What the targets ask against what the machine allows: matmuls at the measured rates plus
    # the fused Adam step (memory-bound, one pass over K models' state) and nothing else.
    steps = math.ceil(SAMPLES / config.batch_size)
    adam = {k: adam_seconds(config.hidden, k, device) * steps / k for k in (1, top)}
    print(f"fused Adam alone, per model-epoch: K=1 {adam[1]:.2f} s, K={top} {adam[top]:.2f} s")
    for label, limit in (("square", square_limit), (f"batch-{config.batch_size}", batch_limit)):
        floor1, floor_k = limit + adam[1], limit + adam[top]
        print(f"floor (matmuls at the {label} rate + Adam): single {floor1:.2f} s/epoch, at best "
              f"{best['reference'] / floor1:.1f}x the reference; K={top} {floor_k:.2f} s per "
              f"model-epoch, at best {single / floor_k:.1f}x single")  # fmt: skip


if __name__ == "__main__":
    main()
