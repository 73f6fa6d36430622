"""The verdicts: each failure named on records built to show it and not on records built not to,
first on synthetic run directories (the numbers of the issue's MNIST runs), then on tiny real
networks trained here; the one-seed gap rule; the cure section of the report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from test_report import Page
from vanishing import records
from vanishing import reporting as report
from vanishing.data import datasets as data
from vanishing.reporting import figures, verdict
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import train

WIDTH = 256


def write_run(
    run_dir: Path,
    *,
    activation: str = "relu",
    depth: int = 30,
    signal_step: float = 1.0,  # dLoss/dh shrinks by this per layer towards the input
    scale_step: float = 1.0,  # the activations' std grows by this per layer with depth
    grad_norms: list[float] | None = None,  # at step 0, per Linear layer
    later_norms: list[list[float]] | None = None,  # at the probes after step 0
    update_ratios: list[list[float]] | None = None,  # per probe, per Linear layer
    dead_init: list[float] | None = None,  # dead units per hidden layer at step 0
    accuracy: float = 0.9,
    test_loss: float = 0.3,
    status: str = "ok",
    seed: int = 0,
    dataset: str = "mnist",
    **config: Any,
) -> Path:
    """A finished run directory whose step-0 probe has the given per-layer profiles."""
    run_dir.mkdir(parents=True)
    config = {
        "activation": activation,
        "hidden": [WIDTH] * depth,
        "init": "kaiming",
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "batch_size": 64,
        "epochs": 1,
        "seed": seed,
        "dataset": dataset,
        "probe_every": 300,
        "probe_size": 512,
        "device": "cpu",
        **config,
    }
    records.write_json(run_dir / records.CONFIG, config)
    signal = [0.05 * signal_step ** (depth - 1 - i) for i in range(depth)]  # layer 1 first
    scale = [0.5 * scale_step**i for i in range(depth)]
    norms = grad_norms or [0.1] * (depth + 1)
    probes = [norms, *(later_norms or [])]
    writer = records.MetricsWriter(run_dir / records.METRICS)
    for index, row_norms in enumerate(probes):
        writer.write(
            {
                "kind": "probe",
                "step": 300 * index,
                "epoch": 1,
                "grad_norms": row_norms,
                "vanishing_ratio": row_norms[0] / row_norms[-1],
                "signal_norms": signal,
                "activation_std": scale,
                "saturated_fraction": [0.0] * depth,
                "dead_fraction": dead_init if dead_init and index == 0 else [0.0] * depth,
                **(
                    {"update_ratio": update_ratios[index]}
                    if update_ratios and index < len(update_ratios)
                    else {}
                ),
            }
        )
    history = [{"epoch": 1, "train_loss": test_loss, "test_loss": test_loss}]
    history[0]["test_accuracy"] = accuracy
    history[0]["dead_fraction"] = [0.0] * depth
    writer.write({"kind": "epoch", "step": 938, **history[0]})
    writer.close()
    diverged = status == "diverged"
    result = {
        "status": status,
        "test_accuracy": math.nan if diverged else accuracy,
        "test_loss": math.nan if diverged else test_loss,
        "history": history,
        "grad_norms_init": norms,
        "vanishing_ratio_init": norms[0] / norms[-1],
        "signal_norms_init": signal,
        "grad_norms_final": probes[-1],
        "saturated_fraction": [0.0] * depth,
        "dead_fraction": [0.0] * depth,
        "steps": 938,
        "train_seconds": 1.0,
        "eval_seconds": 0.1,
        "probe_seconds": 0.1,
        "device": "cpu",
        "versions": {},
        "config": config,
    }
    if diverged:
        result["diverged_step"] = 40
        result["norms_before_divergence"] = {"step": 30, "grad_norms": norms, "weight_norms": []}
    records.write_json(run_dir / records.RESULT, result)
    return run_dir


def verdict_of(run_dir: Path) -> verdict.Verdict:
    (point,) = report.build_report([run_dir], figures=False).points
    return verdict.judge(point)


# The runs, as records: relu depth 30, width 256, SGD momentum 0.9, lr 0.01.
# Xavier halves a ReLU layer's variance: signal and scale fall 0.71 per layer, and layer 1's
# weight gradient is 2.49 times the output layer's, which the old ratio called "no vanishing".
XAVIER = {
    "init": "xavier",
    "signal_step": 0.71,
    "scale_step": 0.71,
    "grad_norms": [0.249, *[0.15] * 29, 0.1],
}


def test_vanishing_signal_and_forward_collapse_cancel_in_the_weight_gradients(tmp_path):
    found = verdict_of(write_run(tmp_path / "xavier", **XAVIER))
    # 0.71 per layer over 29 layers: the signal shrinks about 21,000-fold (1 / 0.71^29).
    assert found.headline == (
        "Vanishing gradient: the back-propagated signal shrinks 21,000-fold from layer 30 to "
        "layer 1 (0.71 per layer)."
    )
    assert found.kinds[:2] == ("vanishing", "forward-collapse") and "cancel" in found.kinds
    text = " ".join(found.sentences)
    assert (
        "Forward collapse: the activations' scale (std) falls 21,000-fold from layer 1 to layer "
        "30 (0.71 per layer)"
    ) in text
    assert "The weight gradients look even (layer 1 gets 2.49 of the output layer's) only " in text
    assert found.cure == (
        "Cure: He (kaiming) initialisation keeps the forward scale; batch norm resets it every "
        "layer."
    )
    assert found.sentences[-1] == found.cure
    assert found.word == "vanishing, forward collapse"


def test_the_cure_fits_what_the_run_already_uses(tmp_path):
    with_norm = verdict_of(write_run(tmp_path / "bn", norm="batch", **XAVIER))
    assert "batch norm" not in with_norm.cure
    assert with_norm.cure.startswith("Cure: He (kaiming) initialisation keeps the forward scale")
    sigmoid = {"activation": "sigmoid", "init": "default", "signal_step": 0.3, "depth": 20}
    plain = verdict_of(write_run(tmp_path / "sigmoid", **sigmoid))
    assert plain.cure.startswith("Cure: batch norm, residual connections or a rectifier (ReLU")
    residual = verdict_of(write_run(tmp_path / "residual", residual=True, **sigmoid))
    assert "residual" not in residual.cure and "batch norm" in residual.cure


def test_signal_that_does_not_shrink_is_not_vanishing_though_the_weight_ratio_is_small(tmp_path):
    """Sigmoid depth 20 with residual connections: the weight ratio is 6.0e-3 because the
    residual stream's activations grow, not because the signal reaching layer 1 shrinks."""
    depth = 20
    norms = [6e-3, *[0.3] * (depth - 1), 1.0]
    found = verdict_of(
        write_run(
            tmp_path / "residual",
            activation="sigmoid",
            depth=depth,
            residual=True,
            signal_step=1.02,  # grows slightly towards the input
            scale_step=1.17,  # 20-fold over 19 layers
            grad_norms=norms,
        )
    )
    assert found.kinds[0] == "healthy" and "mismatch" in found.kinds
    assert "vanishing" not in found.kinds and "Vanishing" not in found.headline
    assert found.headline.startswith("Healthy gradient: the back-propagated signal keeps its size")
    text = " ".join(found.sentences)
    assert (
        "The weight-gradient ratio (6.0e-03, layer 1 / output) alone would read as vanishing, "
        "but the signal reaching layer 1 does not shrink: the activations grow 20-fold with depth"
    ) in text
    assert found.cure == ""


def test_exploding_init_that_diverged_says_so_with_the_norms_before(tmp_path):
    """He gain 2 at depth 30: the signal and the activations grow 1.41 per layer; both weight
    gradients are ~1e4, their ratio 0.19 unremarkable; the run diverges."""
    norms = [1.9e3, *[5e3] * 29, 1e4]
    found = verdict_of(
        write_run(
            tmp_path / "gain",
            init_gain=2.0,
            signal_step=1.41,
            scale_step=1.41,
            grad_norms=norms,
            status="diverged",
        )
    )
    assert found.headline == (
        "Blew up: 1 of 1 runs diverged (the loss became non-finite, by step 40); at step "
        "30, the last probe before, gradient norms reached 1.0e+04 (the output layer)."
    )
    assert found.kinds[:3] == ("training-blow-up", "exploding", "forward-blow-up")
    text = " ".join(found.sentences)
    assert "Exploding gradient: the back-propagated signal grows 21,000-fold from layer 30 " in text
    assert "Forward blow-up: the activations' scale (std) grows 21,000-fold" in text
    assert "Huge gradients at initialisation: norms up to 1.0e+04 (the output layer)." in text
    assert "only because the two cancel" in text
    assert found.cure == (
        "Cure: a lower --init-gain (2 here; 1 keeps each init's own scale); batch norm resets "
        "the scale every layer; --clip-grad-norm caps each step."
    )


def test_a_run_that_clips_is_not_told_to_clip(tmp_path):
    run_dir = write_run(
        tmp_path / "clip",
        init_gain=2.0,
        clip_grad_norm=1.0,
        signal_step=1.41,
        scale_step=1.41,
        accuracy=0.189,
    )
    result = records.read_json(run_dir / records.RESULT)
    records.write_json(run_dir / records.RESULT, {**result, "clipped_steps": 900})
    found = verdict_of(run_dir)
    assert found.headline.startswith("Exploding gradient: the back-propagated signal grows")
    assert "Clipping (--clip-grad-norm 1) cut 900 of 938 steps." in found.sentences
    assert "--clip-grad-norm" not in found.cure and "--init-gain (2 here" in found.cure


def test_a_huge_test_loss_is_a_blow_up_though_the_run_finished(tmp_path):
    """`--lr 1e9` finishes as "ok" with a test loss of 6e25: the verdict calls it blown up."""
    found = verdict_of(write_run(tmp_path / "lr", depth=3, lr=1e9, accuracy=0.098, test_loss=6e25))
    assert found.headline == (
        "Blew up: the final test loss is 6.0e+25, far above chance's 2.30 (ln 10): the updates "
        "exploded at lr 1e+09."
    )
    assert "Test accuracy 9.80 % (one seed): chance level (10.00 %), it did not learn." in (
        found.sentences
    )
    assert (
        found.cure
        == "Cure: a lower learning rate (lr 1e+09 here); --clip-grad-norm to cap each step."
    )
    adam = verdict_of(
        write_run(tmp_path / "adam", depth=3, lr=1e9, optimizer="adam", test_loss=6e25)
    )
    assert adam.cure == "Cure: a lower learning rate (lr 1e+09 here)."  # Adam: clipping won't


def test_gradients_that_grow_during_training_are_exploding(tmp_path):
    found = verdict_of(
        write_run(tmp_path / "grow", depth=3, later_norms=[[1.0] * 4, [3e5, 1e5, 1e4, 2e3]])
    )
    assert found.headline == (
        "Exploding during training: gradient norms grew to 3.0e+05 (layer 1) by step 600, from "
        "0.1 at step 0."
    )


def test_the_live_line_reads_a_runs_rows_by_the_rules_judge_uses(tmp_path):
    """The live line applies `judge`'s rules to the rows so far: gradients that grew huge and
    fell back are still named, at their peak; a net of one hidden layer whose loss blew up says
    so too."""
    peaked = [[3e5, 1e5, 1e4, 2e3], [1.0] * 4]
    run_dir = write_run(tmp_path / "peak", depth=3, later_norms=peaked)
    rows = records.read_metrics(run_dir)
    config = records.read_json(run_dir / records.CONFIG)
    assert verdict_of(run_dir).headline.startswith(
        "Exploding during training: gradient norms grew to 3.0e+05 (layer 1) by step 300,"
    )
    assert verdict.live_headline(rows, config).startswith(
        "Exploding during training: gradient norms reached 3.0e+05 (layer 1) by step 300. "
    )
    one = write_run(tmp_path / "one", depth=1, later_norms=[[0.1, 0.1]], test_loss=6e25)
    rows = records.read_metrics(one)
    line = verdict.live_headline(rows, records.read_json(one / records.CONFIG))
    assert verdict_of(one).kinds[0] == "training-blow-up"
    assert line == (
        "Blew up: by step 300 the loss is 6.0e+25, far above chance's 2.30. No vanishing "
        "gradient: layer 1 receives 1 of the output layer's weight gradient at step 0."
    )


def test_healthy_records_get_no_failure(tmp_path):
    found = verdict_of(write_run(tmp_path / "he", depth=30, signal_step=0.99, scale_step=1.0))
    assert found.kinds == ("healthy",)
    assert found.headline == (
        "Healthy gradient: the back-propagated signal keeps its size from layer 30 to layer 1 "
        "(×0.747, 0.99 per layer)."
    )
    text = " ".join(found.sentences)
    for word in ("anish", "xplod", "ollapse", "low-up", "Blew", "cancel", "Cure", "chance"):
        assert word not in text, word


@pytest.mark.parametrize(
    "signal_step, word",
    [
        (0.7, "vanishing"),
        (0.9, "attenuated"),
        (1.0, "healthy"),
        (1.12, "growing"),
        (1.3, "exploding"),
    ],
)
def test_each_signal_word_at_its_threshold(tmp_path, signal_step, word):
    # Over 29 layers: 3e-5, 0.047, 1, 27, 2e3.
    found = verdict_of(write_run(tmp_path / "run", signal_step=signal_step))
    assert found.kinds[0] == word
    assert verdict.signal_word(signal_step**29) == word


def test_one_hidden_layer_falls_back_to_the_weight_gradients(tmp_path):
    found = verdict_of(write_run(tmp_path / "one", depth=1, grad_norms=[3e-4, 0.1]))
    assert found.headline == (
        "Vanishing gradient: layer 1 receives 3.0e-03 of the output layer's weight gradient at "
        "initialisation."
    )
    assert math.isnan(found.profile.signal_factor)


def test_old_records_read_as_the_old_defaults(tmp_path):
    """Records written before norm, residual, init_gain and clip_grad_norm existed."""
    run_dir = write_run(tmp_path / "old", **XAVIER)
    assert "norm" not in records.read_json(run_dir / records.CONFIG)
    assert "batch norm resets it every layer" in verdict_of(run_dir).cure


def test_headline_is_one_line_for_the_train_command(tmp_path):
    run_dir = write_run(tmp_path / "xavier", **XAVIER)
    line = verdict.headline(run_dir)
    assert line == verdict_of(run_dir).headline and "\n" not in line
    runs = report.load_runs([run_dir])[0]
    assert report.headline(runs) == line
    write_run(tmp_path / "he", depth=30)
    both = verdict.headline(tmp_path)
    assert (
        both.startswith("ReLU, init kaiming: Healthy gradient") and "init xavier: Vanishing" in both
    )


def one_seed_gap(tmp_path: Path, dataset: str, accuracies: dict[str, list[float]]) -> list[str]:
    for activation, values in accuracies.items():
        for seed, accuracy in enumerate(values):
            write_run(
                tmp_path / f"{activation}-{seed}",
                activation=activation,
                depth=3,
                seed=seed,
                accuracy=accuracy,
                dataset=dataset,
            )
    return report.build_report([tmp_path], figures=False).verdicts


def test_one_seed_at_chance_against_one_far_above_is_judged(tmp_path):
    """The Fashion preset: sigmoid 10.0 % against ReLU 77.2 %, one seed each."""
    (sentence,) = one_seed_gap(tmp_path, "fashion-mnist", {"sigmoid": [0.1], "relu": [0.7719]})
    assert sentence == (
        "The accuracy gap between ReLU and Sigmoid (67.19 points) is no seed effect, though each "
        "ran one seed: Sigmoid stayed at chance level (10.00 %) and did not learn, while ReLU "
        "reached 77.19 %."
    )


def test_one_seed_gap_against_the_spread_measured_elsewhere(tmp_path):
    # Tanh ran 3 seeds (std 0.5 points): 6 points is beyond 5 times that, 1 point is not.
    sentences = one_seed_gap(
        tmp_path,
        "mnist",
        {"tanh": [0.90, 0.905, 0.895], "relu": [0.97], "leaky_relu": [0.96]},
    )
    by_other = {s.split(" and ")[1].split(" (")[0]: s for s in sentences}
    assert by_other["Tanh"].startswith(
        "The accuracy gap between ReLU and Tanh (7.00 points) is beyond the seed spread"
    )
    assert by_other["LeakyReLU"] == (
        "The accuracy gap between ReLU and LeakyReLU (1.00 points) cannot be judged: each ran one "
        "seed, and the gap is within 5 times the largest seed spread measured in this report "
        "(0.50 points, Tanh): run --seeds 0,1,2."
    )
    gaps = report.build_report([tmp_path], figures=False)
    assert gaps.verdicts == sentences
    far = one_seed_gap(tmp_path / "far", "mnist", {"tanh": [0.90, 0.905, 0.895], "relu": [0.97]})
    assert far == [
        "The accuracy gap between ReLU and Tanh (7.00 points) is beyond the seed spread, though "
        "ReLU ran one seed: over 5 times the largest spread measured in this report (0.50 "
        "points, std over 3 seeds of Tanh)."
    ]


def test_one_seed_gaps_say_which_side_ran_one_seed_and_a_zero_spread_judges_nothing(tmp_path):
    # Sigmoid ran 3 seeds, all at 11.35 % (std 0); ReLU and Tanh ran one each.
    sentences = one_seed_gap(
        tmp_path, "mnist", {"sigmoid": [0.1135] * 3, "relu": [0.95], "tanh": [0.60]}
    )
    by_other = {s.split(" and ")[1].split(" (")[0]: s for s in sentences}
    assert by_other["Sigmoid"] == (
        "The accuracy gap between ReLU and Sigmoid (83.65 points) is no seed effect, though ReLU "
        "ran one seed: Sigmoid stayed at chance level (11.35 %) and did not learn, while ReLU "
        "reached 95.00 %."
    )
    assert by_other["Tanh"] == (
        "The accuracy gap between ReLU and Tanh (35.00 points) cannot be judged: each ran one "
        "seed, and the seeds measured in this report (Sigmoid) all gave the same accuracy, no "
        "spread to compare with: run --seeds 0,1,2."
    )


def test_the_cure_section_sets_the_settings_side_by_side(tmp_path):
    """Sigmoid depth 20: plain, with batch norm, with residual connections."""
    plain = {"activation": "sigmoid", "depth": 20, "init": "default"}
    write_run(tmp_path / "plain", signal_step=0.2, accuracy=0.1135, **plain)
    write_run(tmp_path / "bn", norm="batch", signal_step=0.99, accuracy=0.902, **plain)
    write_run(
        tmp_path / "res", residual=True, signal_step=1.0, scale_step=1.17, accuracy=0.916, **plain
    )
    built = report.build_report([tmp_path])
    blocks = [b for b in built.figures if b.anchor.startswith("cure-")]
    assert [b.question for b in blocks] == [
        "Which cure restores the gradient?",
        "Which cure keeps the activations' scale?",
    ]
    assert blocks[0].section[0] == "Which cure restores the gradient?"
    table = blocks[1].table
    assert table is not None and table.header[-1] == "verdict"
    assert table.rows == (
        ("Sigmoid, norm batch", "90.20", f"{0.99**19:.3g}", "1", "healthy"),
        ("Sigmoid", "11.35", f"{0.2**19:.1e}", "1", "vanishing, did not learn"),
        ("Sigmoid, residual", "91.60", "1", f"{1.17**19:.3g}", "healthy"),
    )
    page = report.render_html(built)
    parsed = Page()
    parsed.feed(page)
    alts = [attrs["alt"] for tag, attrs in parsed.tags if tag == "img"]
    assert alts[1:3] == [b.question for b in blocks]  # after the activations' shapes
    assert "<h2>Which cure restores the gradient?</h2>" in page
    assert '<table class="cures">' in page
    markdown = report.render_markdown(built)
    assert "| setting | test acc (%) | signal factor, layer 1 / L |" in markdown
    assert "| Sigmoid | 11.35 | 5.2e-14 | 1 | vanishing, did not learn |" in markdown


def test_no_cure_section_where_only_the_activation_differs(tmp_path):
    write_run(tmp_path / "relu", depth=3)
    write_run(tmp_path / "sigmoid", depth=3, activation="sigmoid")
    points = report.build_report([tmp_path], figures=False).points
    assert len(points) == 2 and figures.cure_points(points) == []
    write_run(tmp_path / "relu-bn", depth=3, norm="batch")
    assert len(figures.cure_points(report.build_report([tmp_path], figures=False).points)) == 3


# Real networks, trained here on the tiny data set in about a second each.
REAL = {"batch_size": 32, "probe_every": 5, "probe_size": 64, "device": "cpu", "epochs": 1}


def trained(tmp_path: Path, dataset: data.Dataset, **config: Any) -> verdict.Verdict:
    run_dir = tmp_path / "run"
    train(TrainConfig(**{**REAL, **config}), dataset=dataset, run_dir=run_dir)
    return verdict_of(run_dir)


def test_real_deep_sigmoid_vanishes(tmp_path, tiny_data):
    found = trained(tmp_path, tiny_data, activation="sigmoid", hidden=(16,) * 12)
    assert found.kinds[0] == "vanishing"
    # Twelve sigmoid layers: the signal falls far below the slope bound's 0.25^11 = 2.4e-7.
    assert found.profile.signal_factor < 0.25**11
    factor = fold_of(found.profile.signal_factor)
    assert found.headline == (
        f"Vanishing gradient: the back-propagated signal shrinks {factor}-fold from layer 12 to "
        f"layer 1 ({found.profile.signal_per_layer:.2f} per layer)."
    )
    # Forward, each sigmoid layer also contracts differences between inputs by its slope: the
    # units' spread across samples collapses while their std, around sigmoid's 0.5, does not
    # shrink enough for the weight gradients to cancel.
    assert found.profile.spread_factor < 1e-2 <= found.profile.scale_factor
    assert "forward-collapse" in found.kinds and "cancel" not in found.kinds
    assert found.cure.startswith("Cure: batch norm, residual connections or a rectifier")


def fold_of(factor: float) -> str:
    return verdict.fold(1 / factor)


def test_real_deep_relu_with_xavier_collapses_and_cancels(tmp_path, tiny_data):
    found = trained(
        tmp_path,
        tiny_data,
        hidden=(32,) * 20,
        init="xavier",
        optimizer="sgd",
        momentum=0.9,
        lr=0.01,
    )
    profile = found.profile
    assert found.kinds[:2] == ("vanishing", "forward-collapse") and "cancel" in found.kinds
    # Xavier halves a ReLU layer's variance: about 0.71 per layer, both ways.
    assert 0.6 < profile.signal_per_layer < 0.8 and 0.6 < profile.scale_per_layer < 0.8
    assert (
        f"shrinks {fold_of(profile.signal_factor)}-fold from layer 20 to layer 1" in found.headline
    )
    assert profile.signal.shape == profile.scale.shape == (20,)  # per hidden layer
    text = " ".join(found.sentences)
    # The sentence reads the spread across samples (how much the outputs depend on the input),
    # which Xavier shrinks with the std here (no bias keeps it up).
    assert profile.spread_factor < 1e-2 and profile.spread.shape == (20,)
    assert f"falls {fold_of(profile.spread_factor)}-fold from layer 1 to layer 20" in text
    assert "though their std keeps" not in text
    assert "The weight gradients look even (layer 1 gets " in text
    assert found.cure.startswith("Cure: He (kaiming) initialisation keeps the forward scale")


def test_real_huge_learning_rate_blows_up(tmp_path, tiny_data):
    found = trained(tmp_path, tiny_data, hidden=(16, 16), lr=1e9)
    assert found.kinds[0] == "training-blow-up"
    assert found.headline.startswith("Blew up: the final test loss is ")
    assert found.headline.endswith(
        "far above chance's 2.30 (ln 10): the updates exploded at lr 1e+09."
    )
    assert found.cure == "Cure: a lower learning rate (lr 1e+09 here)."


def test_real_shallow_relu_with_kaiming_is_healthy(tmp_path, tiny_data):
    found = trained(tmp_path, tiny_data, hidden=(64, 64), init="kaiming", epochs=2)
    assert found.kinds == ("healthy",)
    assert 0.5 < found.profile.signal_factor < 2
    assert found.headline.startswith(
        "Healthy gradient: the back-propagated signal keeps its size from layer 2 to layer 1"
    )
    assert found.cure == ""
    assert "chance level" not in " ".join(found.sentences)


def test_real_he_init_at_gain_2_blows_up_forward_even_when_clipped(tmp_path, tiny_data):
    # Gain 2 quadruples a ReLU layer's variance: the scale doubles per layer, and clipping each
    # step to norm 1 cannot undo a forward pass whose logits are thousands of times too large.
    found = trained(
        tmp_path, tiny_data, hidden=(32,) * 12, init="kaiming", init_gain=2.0,
        optimizer="sgd", momentum=0.9, lr=0.01, clip_grad_norm=1.0,
    )  # fmt: skip
    assert found.kinds[:3] == ("training-blow-up", "exploding", "forward-blow-up")
    assert 1.8 < found.profile.scale_per_layer < 2.2
    assert found.headline.endswith(
        f"the logits are huge because the activations' scale grows "
        f"{verdict.fold(found.profile.scale_factor)}-fold with depth."
    )
    assert "updates exploded" not in " ".join(found.sentences)
    assert "--clip-grad-norm" not in found.cure  # it clips already
    assert found.cure.startswith("Cure: a lower --init-gain (2 here")


@pytest.mark.parametrize(
    "norm, cure",
    [
        # Measured by the remedies preset: layer norm alone leaves 20 sigmoid layers vanishing
        # (0.39 per layer), batch norm cures them; so batch norm is still the cure to name.
        ("layer", "Cure: batch norm, residual connections or a rectifier"),
        ("batch", "Cure: residual connections or a rectifier"),
    ],
)
def test_a_cure_already_in_use_is_not_named_again(tmp_path, norm, cure):
    run_dir = write_run(
        tmp_path / norm, activation="sigmoid", depth=20, signal_step=0.39, accuracy=0.1, norm=norm
    )
    found = verdict_of(run_dir)
    assert found.kinds[0] == "vanishing"
    assert found.cure.startswith(cure)


def test_a_healthy_band_signal_beyond_2x_says_which_way(tmp_path):
    # 1.26 per layer over 9 steps: 8-fold, inside the healthy band but no longer "its size".
    found = verdict_of(write_run(tmp_path / "r", depth=10, signal_step=1 / 1.26, accuracy=0.1))
    text = " ".join(found.sentences)
    assert "The back-propagated signal shrinks 8-fold from layer 10 to layer 1 (×0.125)." in text
    assert "keeps its size" not in text


@pytest.mark.parametrize(
    "settings, headline_end, cure",
    [
        # One hidden layer at gain 30 under Adam 1e-3: the init, not the learning rate.
        (
            {"depth": 1, "init_gain": 30.0, "optimizer": "adam", "lr": 0.001, "test_loss": 72.0},
            "the weights start at 30 times the init's own scale (--init-gain), and the logits "
            "with them.",
            "Cure: a lower --init-gain (30 here; 1 keeps each init's own scale); batch norm",
        ),
        # Nothing grew and the gain is 1: the steps did it.
        (
            {"depth": 3, "optimizer": "adam", "lr": 10.0, "test_loss": 500.0},
            "the updates exploded at lr 10.",
            "Cure: a lower learning rate (lr 10 here).",
        ),
    ],
)
def test_a_blown_up_loss_is_blamed_on_its_cause(tmp_path, settings, headline_end, cure):
    found = verdict_of(write_run(tmp_path / "r", accuracy=0.5, **settings))
    assert found.kinds[0] == "training-blow-up"
    assert found.headline.endswith(headline_end)
    assert found.cure.startswith(cure)


@pytest.mark.parametrize(
    "settings, kind, cure",
    [
        # The signal grows 1.5 per layer at gain 1.5: the gain is the cure, not dead units'.
        (
            {"signal_step": 1.5, "init_gain": 1.5, "depth": 10},
            "growing",
            "Cure: a lower --init-gain (1.5 here",
        ),
        # Tanh at half its init's scale: put the scale back first.
        (
            {"activation": "tanh", "init": "xavier_normal", "init_gain": 0.5, "signal_step": 0.5},
            "vanishing",
            "Cure: --init-gain 1 keeps each init's own scale (0.5 here); batch norm",
        ),
        # A linear net shrinks only by its weights: an init that keeps the scale, no rectifier.
        (
            {"activation": "linear", "init": "default", "signal_step": 0.6, "depth": 12},
            "vanishing",
            "Cure: lecun init (std 1/sqrt(fan_in)), batch norm or residual connections, each",
        ),
    ],
)
def test_the_cure_names_the_cause(tmp_path, settings, kind, cure):
    found = verdict_of(write_run(tmp_path / "r", **settings))
    assert found.kinds[0] == kind
    assert found.cure.startswith(cure), found.cure
    assert "rectifier" not in found.cure or settings.get("activation") != "linear"
    assert "nothing vanishes" not in " ".join(found.sentences)


def test_odd_record_values_skip_the_run_with_one_note(tmp_path):
    """A hand-edited config (text where a number belongs) is read as any given config is: the
    run is left out with a note naming the setting, never a sentence built on the text."""
    run_dir = write_run(tmp_path / "r", lr="fast", clip_grad_norm="one", test_loss=1e6)
    write_run(tmp_path / "ok", test_loss=1e6)
    built = report.build_report([tmp_path], figures=False)
    assert [run.path for run in built.runs] == [tmp_path / "ok"]
    assert built.notes == [f"{run_dir}: config.json: lr: expected float, got 'fast'; skipped"]
