"""What watching costs at scale: a GPT-2-small-sized model (124M parameters), unwatched and watched.

Run: .venv/bin/python bench/bench_watch_gpt2.py [--steps 300] [--device cpu|cuda]
     (needs the transformers extra: pip install 'vanishing[transformers]')

The model is Hugging Face's GPT2LMHeadModel from its default GPT2Config (12 layers, 768 wide, 50257
tokens, the embedding tied to the output layer: 124,439,808 parameters), random init, trained by
AdamW at 1e-4 on random tokens (the speed does not depend on them), batch `--batch` of
`--length` tokens. Two copies train side by side, each its own model and optimizer: unwatched,
and watched at every=100 on the training batch of the step. They take turns in chunks of
`--chunk` steps (each turn's order alternating), so the machine's noise falls on both alike.

Printed:
- the cost at every=100: the watched copy's time over the unwatched copy's, over every chunk, minus
  1 (target: within 5 %); each chunk of 100 steps holds one measured step;
- a measured step's own cost: its time over the median unwatched step's, in steps, and an
  unmeasured watched step's cost against an unwatched step (the hooks' checks alone);
- a measured step's memory: on CUDA the peak allocated during the step over an unmeasured step's
  peak; on the CPU the peak resident set sampled every 2 ms during the step over an unmeasured
  step's, and what the watch holds by construction (a copy of every watched weight, kept from
  before the optimizer's step to after it, for the update ratio).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vanishing.measure.watch import watch

EVERY = 100  # the watch's interval: one measured step per 100


def build(layers: int, width: int, vocab: int, device: str) -> tuple[Any, torch.optim.Optimizer]:
    """GPT-2 (Hugging Face's) from a config: the default one is GPT-2 small, 124M parameters."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=layers,
        n_embd=width,
        n_head=max(1, width // 64),
        vocab_size=vocab,
        bos_token_id=vocab - 1,  # GPT-2's are 50256, the last token
        eos_token_id=vocab - 1,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).to(device)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step(model: Any, optimizer: torch.optim.Optimizer, tokens: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.step()


def resident() -> int:
    """This process's resident set in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_memory(device: str, run: Callable[[], None]) -> int:
    """The peak memory while `run` runs: CUDA's allocated peak, else the resident set sampled
    every 2 ms by a thread."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        run()
        sync(device)
        return int(torch.cuda.max_memory_allocated())
    peak = [resident()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per copy (timed)")
    parser.add_argument("--chunk", type=int, default=25, help="steps per turn")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--length", type=int, default=64, help="tokens per sequence")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = args.device
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, args.vocab, (args.batch, args.length), generator=generator)
    tokens = tokens.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        plain = build(args.layers, args.width, args.vocab, device)
        watched = build(args.layers, args.width, args.vocab, device)
        parameters = sum(p.numel() for p in plain[0].parameters())
        handle = watch(*watched, every=EVERY, out=Path(tmp) / "gpt2")
        # Step 0 is measured: warm both up past it (and the allocator), then time from a
        # step that is one past a measured one, so each chunk of 100 holds one measured step.
        warm = EVERY + 1
        for _ in range(warm):
            train_step(*plain, tokens)
        measured_peak = unmeasured = 0
        for step in range(warm):
            if step == EVERY:  # a measured step's memory, against the unmeasured step before it
                measured_peak = peak_memory(device, lambda: train_step(*watched, tokens))
                continue
            if step == EVERY - 1:
                unmeasured = peak_memory(device, lambda: train_step(*watched, tokens))
                continue
            train_step(*watched, tokens)
        held = sum(
            w.numel() * w.element_size() for ws in handle.layers.weights.values() for w in ws
        )
        times: dict[str, list[float]] = {"unwatched": [], "watched": []}
        steps: dict[str, list[float]] = {"unwatched": [], "watched": []}
        measured: list[float] = []
        done = 0
        while done < args.steps:
            count = min(args.chunk, args.steps - done)
            order = (
                ["unwatched", "watched"]
                if (done // args.chunk) % 2 == 0
                else ["watched", "unwatched"]
            )
            for name in order:
                model, optimizer = plain if name == "unwatched" else watched
                chunk_start = time.perf_counter()
                for _ in range(count):
                    is_measured = name == "watched" and handle.step % EVERY == 0
                    sync(device)
                    start = time.perf_counter()
                    train_step(model, optimizer, tokens)
                    sync(device)
                    (measured if is_measured else steps[name]).append(time.perf_counter() - start)
                times[name].append(time.perf_counter() - chunk_start)
            done += count
        handle.close()
    base_step = statistics.median(steps["unwatched"])
    total = sum(times["watched"]) / sum(times["unwatched"]) - 1
    hooks = statistics.median(steps["watched"]) / base_step - 1
    print(
        f"GPT2LMHeadModel, {parameters:,} parameters, batch {args.batch} x {args.length} tokens, "
        f"AdamW, {device}, {torch.get_num_threads()} threads, {args.steps} steps per copy in "
        f"turns of {args.chunk}:"
    )
    print(f"  unwatched step (median)                 {base_step * 1e3:8.1f} ms")
    print(f"  watched at every={EVERY}, total time     {total:+8.1%}  (target: within 5 %)")
    print(f"  an unmeasured watched step (median)     {hooks:+8.1%}")
    for seconds in measured:
        print(
            f"  a measured step                         {seconds * 1e3:8.1f} ms = "
            f"{seconds / base_step:.2f} unwatched steps"
        )
    unit = 2**20
    print(
        f"  a measured step's peak memory           {measured_peak / unit:8.0f} MiB against "
        f"{unmeasured / unit:.0f} MiB for an unmeasured step "
        f"({(measured_peak - unmeasured) / unit:+.0f} MiB; "
        f"the copy of the watched weights it holds: {held / unit:.0f} MiB, {held:,} bytes)"
    )


if __name__ == "__main__":
    main()
