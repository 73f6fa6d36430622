"""`vanishing export --to tensorboard`: the event files, read back with TensorBoard's own reader
(not tensorboardX, their writer), hold the records' numbers under the documented tags."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import recurrent_records
from conftest import make_arrays, write_arrays
from export_records import SMALL, WATCH_LAYERS, watch_values, write_watch_run
from vanishing import records
from vanishing.data import datasets as data
from vanishing.frontends.cli import main
from vanishing.reporting.export import export_runs
from vanishing.training.loop import train

# Both come with the test extra; without them (a bare install) these tests are skipped.
pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
layout_pb2 = pytest.importorskip("tensorboard.plugins.custom_scalar.layout_pb2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A compare-like directory: one tiny trained run and a watch run one level deeper."""
    root = tmp_path_factory.mktemp("export") / "compare"
    folder = write_arrays(tmp_path_factory.mktemp("tiny"), make_arrays(), gz=True)
    dataset = data.load_dataset(data_dir=folder, verify=False)
    train(SMALL, dataset=dataset, run_dir=root / "relu-seed0")
    write_watch_run(root / "watch" / "net")
    return root


@pytest.fixture(scope="module")
def exported(runs) -> Path:
    """The default log directory after one export."""
    result = export_runs([runs], to="tensorboard")
    assert result.where == runs / "tensorboard" and not result.notes
    return Path(result.where)


def read(events: Path):
    """Every event of a run directory, through TensorBoard's reader."""
    guidance = {kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}  # keep them all
    accumulator = event_accumulator.EventAccumulator(str(events), size_guidance=guidance)
    return accumulator.Reload()


def series(accumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def f32(value: float) -> float:
    return float(np.float32(value))


def test_one_event_directory_per_run_named_by_its_path(runs, exported):
    assert sorted(p.relative_to(exported).as_posix() for p in exported.rglob("events.*")) == [
        f"relu-seed0/{p.name}" for p in (exported / "relu-seed0").glob("events.*")
    ] + [f"watch/net/{p.name}" for p in (exported / "watch" / "net").glob("events.*")]


def test_trained_run_scalars_equal_the_records(runs, exported):
    rows = records.read_metrics(runs / "relu-seed0")
    probes = [r for r in rows if r["kind"] == "probe"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    expected: dict[str, list[tuple[int, float]]] = {}

    def add(tag: str, step: int, value: float) -> None:
        expected.setdefault(tag, []).append((step, f32(value)))

    for row in probes:
        add("loss/probe", row["step"], row["loss"])
        add("vanishing_ratio", row["step"], row["vanishing_ratio"])
        for key, prefix in (
            ("grad_norms", "grad_norm"),
            ("weight_norms", "weight_norm"),
            ("update_ratio", "update_ratio"),
        ):
            for name, value in zip(["layer1", "layer2", "output"], row[key], strict=True):
                add(f"{prefix}/{name}", row["step"], value)
        for key in ("signal_norms", "saturated_fraction", "dead_fraction"):
            prefix = key.removesuffix("s")  # signal_norms: signal_norm
            for name, value in zip(["layer1", "layer2"], row[key], strict=True):
                add(f"{prefix}/{name}", row["step"], value)
    for row in epochs:
        add("loss/train", row["step"], row["train_loss"])
        add("loss/test", row["step"], row["test_loss"])
        add("accuracy/test", row["step"], row["test_accuracy"])
        for name, value in zip(["layer1", "layer2"], row["dead_fraction"], strict=True):
            add(f"dead_fraction_epoch/{name}", row["step"], value)
    accumulator = read(exported / "relu-seed0")
    assert sorted(accumulator.Tags()["scalars"]) == sorted(expected)  # no timings, nothing else
    for tag, points in expected.items():
        assert series(accumulator, tag) == points, tag
    assert [s for s, _ in series(accumulator, "loss/train")] == [10, 20]  # the epoch rows' steps


def test_histograms_hold_the_recorded_bins(runs, exported):
    rows = [r for r in records.read_metrics(runs / "relu-seed0") if r["kind"] == "probe"]
    accumulator = read(exported / "relu-seed0")
    assert sorted(accumulator.Tags()["histograms"]) == ["activation/layer1", "activation/layer2"]
    for layer, width in enumerate(SMALL.hidden):
        events = accumulator.Histograms(f"activation/layer{layer + 1}")
        assert [e.step for e in events] == [r["step"] for r in rows]
        for event, row in zip(events, rows, strict=True):
            recorded, h = row["activation_histogram"][layer], event.histogram_value
            assert list(h.bucket) == recorded["counts"]
            assert h.num == sum(h.bucket) == SMALL.probe_size * width
            assert list(h.bucket_limit) == recorded["edges"][1:]  # right edges
            filled = np.flatnonzero(recorded["counts"])
            assert h.min == recorded["edges"][filled[0]]
            assert h.max == recorded["edges"][filled[-1] + 1]
            mean = row["activation_mean"][layer]
            assert h.sum == pytest.approx(mean * h.num, rel=1e-6)
            assert h.sum_squares / h.num == pytest.approx(
                (h.num - 1) / h.num * row["activation_std"][layer] ** 2 + mean**2, rel=1e-6
            )


def layout_charts(accumulator) -> dict[str, list[str]]:
    """The custom-scalars layout the run carries: {chart title: its tag regexes}."""
    (event,) = accumulator.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    return {
        chart.title: list(chart.multiline.tag)
        for category in layout.category
        for chart in category.chart
    }


def in_chart(regexes: list[str], tags: list[str]) -> list[str]:
    """The tags a chart draws: TensorBoard matches each regex from the tag's start."""
    return sorted(tag for tag in tags if any(re.match(r, tag) for r in regexes))


def test_one_chart_draws_every_layer(exported):
    accumulator = read(exported / "relu-seed0")
    charts, tags = layout_charts(accumulator), accumulator.Tags()["scalars"]
    hidden = ["layer1", "layer2"]
    assert in_chart(charts["gradient norm ||dLoss/dW|| per layer"], tags) == [
        "grad_norm/layer1",
        "grad_norm/layer2",
        "grad_norm/output",
    ]
    for title, prefix in (
        ("signal norm ||dLoss/dh|| per layer", "signal_norm"),
        ("dead fraction per layer (probe batch)", "dead_fraction"),
        ("dead fraction per layer (training set, epoch ends)", "dead_fraction_epoch"),
        ("saturated fraction per layer", "saturated_fraction"),
    ):
        assert in_chart(charts[title], tags) == [f"{prefix}/{n}" for n in hidden], title
    assert in_chart(charts["loss"], tags) == ["loss/probe", "loss/test", "loss/train"]
    assert in_chart(charts["vanishing ratio (first layer / last layer)"], tags) == [
        "vanishing_ratio"
    ]
    drawn = [tag for regexes in charts.values() for tag in in_chart(regexes, tags)]
    assert sorted(drawn) == sorted(tags)  # every scalar in exactly one chart


def test_watch_run_uses_its_layer_names_and_skips_nulls(runs, exported):
    accumulator = read(exported / "watch" / "net")
    tags = accumulator.Tags()
    assert series(accumulator, "grad_norm/conv1") == [
        (0, f32(1e-5)),
        (100, f32(101e-5)),
        (200, f32(201e-5)),
    ]
    assert {t.split("/", 1)[1] for t in tags["scalars"] if t.startswith("grad_norm/")} == set(
        WATCH_LAYERS
    )
    assert series(accumulator, "dead_fraction/conv2") == [(0, 0.0), (100, 1.0), (200, 1.0)]
    assert series(accumulator, "loss/probe") == [(0, 2.0), (100, f32(1.9))]  # null: left out
    assert series(accumulator, "logged/lr") == [(200, f32(0.01))]  # the user's own w.log value
    assert not [t for t in tags["scalars"] if t.startswith("update_ratio/")]  # no optimizer
    assert sorted(tags["histograms"]) == ["activation/conv1", "activation/conv2"]
    for event in accumulator.Histograms("activation/conv1"):
        values = watch_values(event.step)[0]
        h = event.histogram_value
        assert h.num == sum(h.bucket) == len(values)
        assert (h.min, h.max) == (values.min(), values.max())
        assert h.sum == pytest.approx(values.sum(), rel=1e-9)
        assert h.sum_squares == pytest.approx(values @ values, rel=1e-9)
    (text,) = accumulator.Tensors("config/text_summary")
    assert '"source": "watch"' in text.tensor_proto.string_val[0].decode()


def test_a_second_export_replaces_the_first(runs, tmp_path):
    logdir = tmp_path / "tb"
    for _ in range(2):
        result = export_runs([runs / "relu-seed0"], logdir=logdir)
    assert [out for _, out in result.runs] == [logdir / "relu-seed0"]  # a run given: its name
    assert len(list((logdir / "relu-seed0").glob("events.*"))) == 1
    assert len(read(logdir / "relu-seed0").Scalars("loss/train")) == SMALL.epochs


def test_several_directories_are_named_below_their_own(runs, tmp_path):
    result = export_runs([runs / "watch", runs / "relu-seed0"], logdir=tmp_path / "tb")
    assert [out.relative_to(tmp_path / "tb").as_posix() for _, out in result.runs] == [
        "watch/net",
        "relu-seed0",
    ]


def test_cli_writes_and_says_how_to_open(runs, tmp_path, capsys):
    logdir = tmp_path / "tb"
    assert main(["export", str(runs), "--to", "tensorboard", "--logdir", str(logdir)]) == 0
    out = capsys.readouterr().out
    assert f"2 run(s) written as TensorBoard event files to {logdir}" in out
    assert f"tensorboard --logdir {logdir}" in out
    assert len(read(logdir / "relu-seed0").Scalars("accuracy/test")) == SMALL.epochs


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such directory: "),
        ("empty", "no run directories (with config.json) under "),
        ("format", "unknown export format 'csv'; choose from: tensorboard, mlflow, wandb"),
        ("unwritable", "cannot write to the TensorBoard log directory "),
        (
            "no tensorboardX",
            "tensorboard export needs tensorboardX: pip install 'vanishing[tensorboard]'",
        ),
    ],
)
def test_cli_errors_are_one_line_exit_2(runs, tmp_path, capsys, monkeypatch, case, message):
    directory, to, logdir = runs, "tensorboard", tmp_path / "tb"
    if case == "missing":
        directory = tmp_path / "missing"
    elif case == "empty":
        directory = tmp_path
    elif case == "format":
        to = "csv"
    elif case == "unwritable":
        (tmp_path / "file").write_text("in the way")
        logdir = tmp_path / "file" / "tb"
    else:
        monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails, as uninstalled
    code = main(["export", str(directory), "--to", to, "--logdir", str(logdir)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"vanishing export: error: {message}")
    assert not logdir.exists()


def test_cli_needs_to(runs, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["export", str(runs)])
    assert exit.value.code == 2
    assert "the following arguments are required: --to" in capsys.readouterr().err


# A recurrent run's time profile and a regression run (records written by hand, as SPEC22's
# trainer writes them: tests/recurrent_records.py).
NULL_AT = (1, 1)  # lstm 2's gradient at t = 1 of the probe at step 10 was not finite


@pytest.fixture(scope="module")
def recurrent(tmp_path_factory) -> tuple[Path, Path]:
    """Two runs, an LSTM on rows and a tanh RNN on the adding problem, and their export."""
    root = tmp_path_factory.mktemp("recurrent") / "runs"
    recurrent_records.write_lstm_run(root / "lstm", null_at=NULL_AT)
    recurrent_records.write_adding_run(root / "adding")
    result = export_runs([root], logdir=root / "tb")
    assert not result.notes
    return root, Path(result.where)


def test_time_profile_and_gates_are_scalars_per_recurrent_layer(recurrent):
    root, logdir = recurrent
    accumulator = read(logdir / "lstm")
    steps, layers = recurrent_records.STEPS, ["lstm_1", "lstm_2"]  # "lstm 1" as a tag
    for layer, name in enumerate(layers):
        probes = [
            step
            for step in recurrent_records.LSTM_PROBES
            if not (step == 10 and layer == NULL_AT[0])  # no first step: no quotient
        ]
        factors = [recurrent_records.FACTORS[step] for step in probes]
        first_over_last = series(accumulator, f"time/{name}/first_over_last")
        assert [s for s, _ in first_over_last] == probes
        assert [v for _, v in first_over_last] == pytest.approx(
            [f ** (steps - 1) for f in factors], rel=1e-6
        )
        assert [v for _, v in series(accumulator, f"time/{name}/per_step")] == pytest.approx(
            factors, rel=1e-6
        )
        for gate in ("input", "forget", "output"):
            assert series(accumulator, f"gate/{name}/{gate}") == [
                (step, f32(recurrent_records.gates(step, layer)[gate]))
                for step in recurrent_records.LSTM_PROBES
            ]
            assert series(accumulator, f"gate_saturated/{name}/{gate}") == [
                (step, f32(recurrent_records.saturated(step, layer)[gate]))
                for step in recurrent_records.LSTM_PROBES
            ]
    norms = [(0, f32(0.9)), (10, 1.0), (20, f32(1.1))]
    assert series(accumulator, "recurrent_norm/lstm_2") == norms
    # A classification's accuracy is still there.
    assert series(accumulator, "accuracy/test") == [(10, f32(0.7)), (20, f32(0.9))]
    charts, tags = layout_charts(accumulator), accumulator.Tags()["scalars"]
    drawn = [tag for regexes in charts.values() for tag in in_chart(regexes, tags)]
    assert sorted(drawn) == sorted(tags)  # every scalar in exactly one chart
    title = "gradient at the first step / at the last, ||dL/dh_1|| / ||dL/dh_T||"
    assert in_chart(charts[title], tags) == [f"time/{n}/first_over_last" for n in layers]


def viridis_lut() -> np.ndarray:
    import matplotlib

    return np.round(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255)


def test_time_heatmap_is_an_image_per_probe_on_one_log_scale(recurrent):
    from PIL import Image

    root, logdir = recurrent
    accumulator = read(logdir / "lstm")
    steps = recurrent_records.STEPS
    # Every norm lies in 1e-11 (0.01 * 0.5 ** 27 = 7e-11) .. 1e-1: that scale at every probe.
    low, high = -11, -1
    (legend,) = accumulator.Tensors("time/heatmap_legend/text_summary")
    text = legend.tensor_proto.string_val[0].decode()
    assert "top to bottom: lstm 1, lstm 2" in text and f"t = 1 to {steps}" in text
    assert f"from 1e{low} (dark purple) to 1e{high} (yellow)" in text
    images = accumulator.Images("time/heatmap")
    assert [image.step for image in images] == list(recurrent_records.LSTM_PROBES)
    lut = viridis_lut()
    cell = 23  # ceil(640 / 28) pixels per step; bands of 24 with a gap of 2
    for image in images:
        pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        assert pixels.shape == (2 * 24 + 2, steps * cell, 3) == (image.height, image.width, 3)
        assert (pixels[24:26] == 255).all()  # the gap between the bands
        for layer in (0, 1):
            band = pixels[layer * 26 : layer * 26 + 24]
            assert (band == band[:1]).all()  # each column one colour, top to bottom
            for t in range(1, steps + 1):
                cells = band[0, (t - 1) * cell : t * cell]
                assert (cells == cells[:1]).all()
                colour = cells[0]
                if image.step == 10 and (layer, t) == NULL_AT:
                    assert tuple(colour) == (200, 200, 200)  # no finite value: grey
                    continue
                # exactly a viridis colour (two pairs of its 256 round to one colour)
                indices = np.flatnonzero((lut == colour).all(axis=1))
                assert indices.size, colour
                expected = np.log10(recurrent_records.time_norm(image.step, layer, t))
                place = (expected - low) / (high - low) * 255
                assert np.abs(indices - place).min() <= 0.5 + 1e-9, (image.step, layer, t)


def test_a_regression_run_exports_its_loss_and_baseline_not_accuracy(recurrent):
    root, logdir = recurrent
    accumulator = read(logdir / "adding")
    tags = accumulator.Tags()["scalars"]
    assert series(accumulator, "loss/test") == [(10, f32(0.11)), (20, f32(0.06))]
    assert series(accumulator, "loss/baseline") == [(10, f32(1 / 6)), (20, f32(1 / 6))]
    assert not [t for t in tags if t.startswith(("accuracy/", "logged/"))]
    assert in_chart(layout_charts(accumulator)["loss"], tags) == [
        "loss/baseline",
        "loss/probe",
        "loss/test",
        "loss/train",
    ]
    # A plain RNN has no gates: no gate tags; its one layer's quotient is 0.8 ** 49.
    assert not [t for t in tags if t.startswith("gate")]
    values = [v for _, v in series(accumulator, "time/rnn_1/first_over_last")]
    assert values == pytest.approx([0.8 ** (recurrent_records.ADDING_STEPS - 1)] * 3, rel=1e-6)
    assert [image.step for image in accumulator.Images("time/heatmap")] == [0, 10, 20]


def test_an_mlp_exports_no_time_profile(exported):
    tags = read(exported / "relu-seed0").Tags()
    assert tags["images"] == []
    assert not [t for t in tags["scalars"] if t.startswith(("time/", "gate", "recurrent_norm"))]
    assert not [t for t in tags["tensors"] if t.startswith("time/")]
