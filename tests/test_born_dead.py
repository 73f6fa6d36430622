"""Seeds born dead: a run whose whole hidden layer is dead at step 0 passes no gradient to layer 1
(a signal of exactly 0), which a geometric mean over seeds cannot hold; the verdict says how many
seeds and where, on what the probe measured, and blames the dead layer, not the init's scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from test_diagnosis import REAL, verdict_of, write_run
from vanishing import records
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import train


def seeds(tmp_path: Path, dead: dict[int, int], alive: int, depth: int = 6) -> Path:
    """Runs of one point: `dead` {seed: its first dead layer} pass no gradient; `alive` more
    seeds shrink 0.5 per layer."""
    for seed, layer in dead.items():
        fractions = [0.5] * depth
        fractions[layer - 1 :] = [1.0] * (depth - layer + 1)
        write_run(
            tmp_path / f"s{seed}", depth=depth, signal_step=0.0, dead_init=fractions, seed=seed
        )
    for seed in range(len(dead), len(dead) + alive):
        write_run(tmp_path / f"s{seed}", depth=depth, signal_step=0.5, seed=seed)
    return tmp_path


def verdict_of_point(folder: Path):
    from vanishing import reporting as report
    from vanishing.reporting import verdict

    (point,) = report.build_report([folder], figures=False).points
    return verdict.judge(point)


def test_seeds_born_dead_are_counted_and_located(tmp_path):
    found = verdict_of_point(seeds(tmp_path, {0: 3, 1: 3, 2: 5}, alive=2))
    assert found.kinds[0] == "vanishing"
    assert found.headline == (
        "Vanishing gradient in 3 of 5 seeds: no gradient reaches layer 1 at all, because a "
        "whole layer is dead at step 0 (layer 3 in 2 seeds, layer 5 in 1), zero for each of the "
        "512 probe images; the factors here are the other 2 seeds'."
    )
    # The other seeds' factor, 0.5 per layer over 5 steps: 1/32.
    assert "shrinks 32-fold from layer 6 to layer 1" in found.sentences[1]
    assert found.cure.startswith("Cure: look at what feeds the dead layer")


def test_one_dead_layer_in_every_dead_seed_is_named_once(tmp_path):
    found = verdict_of_point(seeds(tmp_path, {0: 4}, alive=1))
    assert found.headline.startswith(
        "Vanishing gradient in 1 of 2 seeds: no gradient reaches layer 1 at all, because every "
        "unit of layer 4 is dead at step 0, zero for each of the 512 probe images; the factors "
        "here are the other seed's."
    )


def test_no_seed_born_dead_no_sentence(tmp_path):
    found = verdict_of_point(seeds(tmp_path, {}, alive=3))
    assert "born" not in found.headline and "of 3 seeds" not in " ".join(found.sentences)
    assert found.headline.startswith("Attenuated gradient: the back-propagated signal shrinks 32")


def test_every_seed_dead_at_one_layer_says_it_is_the_probes(tmp_path):
    found = verdict_of(
        write_run(tmp_path / "r", depth=6, signal_step=0.0, dead_init=[0.5, 1, 1, 1, 1, 1])
    )
    assert found.headline == (
        "Vanishing gradient: the back-propagated signal reaching layer 1 is exactly 0 because "
        "every unit of layer 2 is dead at step 0 (zero for each of the 512 probe images): no "
        "gradient passes it back."
    )


def test_real_narrow_relu_seeds_born_dead(tmp_path, tiny_data):
    """8 seeds of a ReLU MLP of width 3, depth 15, He init: some are born dead (a layer zero
    for every probe image); the verdict counts exactly those whose records say so."""
    for seed in range(8):
        config = TrainConfig(**{**REAL, "activation": "relu", "hidden": (3,) * 15})
        config = TrainConfig(**{**config.to_dict(), "init": "kaiming", "seed": seed})
        train(config, dataset=tiny_data, run_dir=tmp_path / f"s{seed}")
    dead_layers = {}
    for seed in range(8):
        row = next(r for r in records.read_metrics(tmp_path / f"s{seed}") if r["kind"] == "probe")
        fractions, signal = np.array(row["dead_fraction"]), np.array(row["signal_norms"])
        if (fractions >= 1).any():
            dead_layers[seed] = int(np.argmax(fractions >= 1)) + 1
            assert signal[0] == 0  # nothing passes a layer whose every unit is off
    assert 0 < len(dead_layers) < 8, dead_layers  # the point of the test: some, not all
    found = verdict_of_point(tmp_path)
    assert found.headline.startswith(
        f"Vanishing gradient in {len(dead_layers)} of 8 seeds: no gradient reaches layer 1"
    )
    first = min(dead_layers.values())
    assert f"layer {first} in " in found.headline or f"unit of layer {first} " in found.headline


def test_every_seed_dead_at_other_layers_names_each(tmp_path):
    found = verdict_of_point(seeds(tmp_path, {0: 3, 1: 5}, alive=0))
    assert found.headline == (
        "Vanishing gradient in 2 of 2 seeds: no gradient reaches layer 1 at all, because a "
        "whole layer is dead at step 0 (layer 3 in 1 seed, layer 5 in 1), zero for each of the "
        "512 probe images."
    )
    assert not [s for s in found.sentences if "too small for float32" in s]


def test_a_signal_of_zero_with_no_dead_layer_is_an_underflow_not_a_dead_layer(tmp_path):
    write_run(tmp_path / "s0", depth=6, signal_step=0.0, seed=0)  # 0, and no layer dead
    write_run(tmp_path / "s1", depth=6, signal_step=0.5, seed=1)
    found = verdict_of_point(tmp_path)
    assert "dead at step 0" not in " ".join(found.sentences)
    seeds(tmp_path / "mixed", {0: 3}, alive=1)
    write_run(tmp_path / "mixed" / "s9", depth=6, signal_step=0.0, seed=9)
    found = verdict_of_point(tmp_path / "mixed")
    assert found.headline == (
        "Vanishing gradient in 1 of 3 seeds: no gradient reaches layer 1 at all, because every "
        "unit of layer 3 is dead at step 0, zero for each of the 512 probe images; in 1 more "
        "the signal underflowed (too small for float32); the factors here are the other seed's."
    )
