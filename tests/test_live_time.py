"""`vanishing live` for recurrent networks and regression, in Debian's chromium: the form offers
the recurrent settings and leaves an arch's own defaults (tanh, one layer of 128) to the settings
parser, a bad combination is the CLI's one line under the form; a recurrent run's panel draws the
gradient per time step (first probe and latest), the recurrent layer x time step heatmap and the
gates, named by the rows' `time_layers`, as the rows arrive; a regression run's shows its test
loss beside its baseline, never an accuracy; an MLP's shows none of these. The records are
written by hand as SPEC22's trainer writes them (tests/recurrent_records.py)."""

from __future__ import annotations

import json
import math
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import recurrent_records as rr
from test_browser import CHROMIUM_ARGS, browser_or_skip
from test_live_browser import RECORD_CANVAS_TEXT, TIMEOUT_MS, serving
from vanishing import records
from vanishing.data.sequences import SEQUENCES
from vanishing.frontends.live import create_app
from vanishing.frontends.live.jobs import parse_request
from vanishing.frontends.live.server import bind
from vanishing.model.recurrent import ARCHS, RECURRENT_HIDDEN
from vanishing.settings.config import TrainConfig, choices_of

PANEL = """panel => ({
    time: {...panel.querySelector('.time').dataset},
    timeShown: !panel.querySelector('.time-card').hidden,
    timeChart: !!panel.querySelector('.time canvas'),
    timeRatio: panel.querySelector('.time-ratio').textContent,
    heat: {...panel.querySelector('canvas.time-heatmap').dataset},
    heatShown: !panel.querySelector('.time-heat-card').hidden,
    heatTexts: panel.querySelector('canvas.time-heatmap').drawnTexts || [],
    legend: [...panel.querySelectorAll('.time-heat-card .legend span')].map(s => s.textContent),
    gatesShown: !panel.querySelector('.gates-card').hidden,
    gates: [...panel.querySelectorAll('.gates tr')].map(tr =>
        [...tr.children].map(cell => cell.textContent)),
    lossTitle: panel.querySelector('.loss-title').textContent,
    lossNote: panel.querySelector('.loss-note').hidden
        ? null : panel.querySelector('.loss-note').textContent,
    lossSeries: [...panel.querySelectorAll('.loss .u-series th')].map(th => th.textContent),
    text: panel.innerText,
})"""
# The heatmap's colours along lstm 1's row (the canvas' own pixels, at its left and right end).
HEAT_ENDS = """canvas => {
    const context = canvas.getContext('2d');
    const y = Math.floor(canvas.height * 0.2);
    const pixel = x => [...context.getImageData(x, y, 1, 1).data.slice(0, 3)];
    return [pixel(Math.floor(canvas.width * 0.4)), pixel(canvas.width - 3)];
}"""


def mlp_run(run_dir: Path) -> None:
    """A finished MLP's records: no time profile, a classification."""
    run_dir.mkdir(parents=True)
    config = TrainConfig(hidden=(16, 16), epochs=1, probe_every=10, device="cpu").to_dict()
    records.write_json(run_dir / records.CONFIG, config)
    probes = [
        {"kind": "probe", "step": step, "epoch": 0, "loss": 2.0, "grad_norms": [1e-3, 1e-2, 0.1]}
        for step in (0, 10)
    ]
    epoch = {"kind": "epoch", "epoch": 1, "step": 10, "train_loss": 1.0, "test_loss": 0.9}
    rows = [*probes, {**epoch, "test_accuracy": 0.8}]
    rr.write_rows(run_dir, rows)
    history = [{key: value for key, value in rows[-1].items() if key != "kind"}]
    result = {"status": "ok", "test_accuracy": 0.8, "test_loss": 0.9, "history": history}
    records.write_json(run_dir / records.RESULT, {**result, "config": config})


def launch(playwright):
    _, executable = browser_or_skip()
    return playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)


def new_page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.add_init_script(RECORD_CANVAS_TEXT)
    return page


def app_on(served: Path, out: Path):
    sock = bind("127.0.0.1", 0)
    token = secrets.token_urlsafe(16)
    return create_app([served], out, token=token, port=sock.getsockname()[1]), sock, token


def test_a_recurrent_run_shows_its_time_profile_a_regression_its_baseline(tmp_path):
    served = tmp_path / "served"
    rr.write_lstm_run(served / "lstm")
    rr.write_adding_run(served / "adding")
    mlp_run(served / "mlp")
    app, sock, token = app_on(served, tmp_path / "out")
    sync_playwright, _ = browser_or_skip()
    errors: list[str] = []
    with serving(app, sock) as url, sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = new_page(browser, errors)
            page.goto(f"{url}/?token={token}")
            meta = page.text_content('#list li[data-path="1/adding"] .meta')
            page.click('#list li[data-path="1/lstm"] .open')
            page.click('#list li[data-path="1/adding"] .beside')
            page.click('#list li[data-path="1/mlp"] .beside')
            page.wait_for_function(
                """() => ['1/lstm', '1/adding', '1/mlp'].every(run => {
                    const panel = document.querySelector(`.panel[data-run="${run}"]`);
                    return panel && panel.querySelector('.status').textContent === 'ok'
                        && panel.querySelector('.profile').dataset.step
                        && panel.querySelector('.loss canvas')
                        && (run === '1/mlp' || panel.querySelector('.time canvas'));
                })"""
            )
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
            shown = {
                run: page.eval_on_selector(f'.panel[data-run="1/{run}"]', PANEL)
                for run in ("lstm", "adding", "mlp")
            }
            heat_ends = page.eval_on_selector(
                '.panel[data-run="1/lstm"] canvas.time-heatmap', HEAT_ENDS
            )
        finally:
            browser.close()
    assert errors == []

    lstm = shown["lstm"]
    steps = rr.STEPS
    assert lstm["timeShown"] and lstm["timeChart"] and lstm["heatShown"] and lstm["gatesShown"]
    # The gradient per time step at the latest probe (step 20), beside the first's, per layer.
    assert lstm["time"]["step"] == "20" and lstm["time"]["firstStep"] == "0"
    assert json.loads(lstm["time"]["layers"]) == rr.LSTM_LAYERS
    assert lstm["time"]["steps"] == str(steps)
    values = json.loads(lstm["time"]["values"])
    for layer in (0, 1):
        expected = [rr.time_norm(20, layer, t) for t in range(1, steps + 1)]
        assert values[layer] == pytest.approx(expected, rel=1e-12)
    assert json.loads(lstm["time"]["ratios"]) == pytest.approx([0.9 ** (steps - 1)] * 2)
    said = "the gradient reaching t = 1 is 0.0581 of that reaching t = 28 (0.9 per step)"
    assert lstm["timeRatio"] == f"At step 20, lstm 1: {said}; lstm 2: {said}."
    # The heatmap of the latest probe: its rows named by time_layers, its columns t = 1 .. 28,
    # on the decades its values span (5.8e-4 .. 0.1); dark where little gradient arrives.
    assert lstm["heat"]["step"] == "20"
    low, high = json.loads(lstm["heat"]["scale"])
    assert (low, high) == (math.floor(math.log10(rr.time_norm(20, 0, 1))), -1) == (-4, -1)
    assert lstm["legend"][0] == "1e-4" and lstm["legend"][2] == "1e-1"
    assert {"lstm 1", "lstm 2", "t = 1", f"t = {steps}"} <= set(lstm["heatTexts"])
    left, right = heat_ends
    assert sum(left) < sum(right) and left[1] < right[1], heat_ends  # viridis: dark to yellow
    # Each gate of each layer, now and at the first probe, and its saturated share.
    assert lstm["gates"][0] == ["layer", "gate", "now", "step 0", "saturated"]
    assert lstm["gates"][1:] == [
        [name, gate, f"{rr.gates(20, layer)[gate]:.2f}", f"{rr.gates(0, layer)[gate]:.2f}",
         f"{100 * rr.saturated(20, layer)[gate]:.1f} %"]
        for layer, name in enumerate(rr.LSTM_LAYERS)
        for gate in ("input", "forget", "output")
    ]  # fmt: skip
    assert lstm["gates"][2][:4] == ["lstm 1", "forget", "0.70", "0.50"]
    assert lstm["lossTitle"] == "Loss and accuracy" and lstm["lossNote"] is None

    adding = shown["adding"]
    assert adding["timeShown"] and adding["heatShown"]
    assert json.loads(adding["time"]["layers"]) == ["rnn 1"]
    assert not adding["gatesShown"]  # a plain RNN has no gates
    # A regression: the squared error beside its baseline, no accuracy anywhere.
    assert adding["lossTitle"] == "Loss (mean squared error) and its baseline"
    assert adding["lossNote"] == (
        "Epoch 2: test loss (mean squared error) 0.06; "
        "the baseline, always answering the targets' mean, scores 0.167."
    )
    assert adding["lossSeries"] == ["probe loss", "train loss", "test loss", "baseline"]
    assert "NaN" not in adding["text"] and "accuracy" not in adding["text"]
    assert "%" not in adding["lossNote"]
    assert meta == "ok · MSE 0.0600 (baseline 0.167)"

    mlp = shown["mlp"]  # an MLP's panel as before: no time, no gates, accuracy
    assert not (mlp["timeShown"] or mlp["heatShown"] or mlp["gatesShown"])
    assert mlp["lossTitle"] == "Loss and accuracy" and mlp["lossNote"] is None
    assert "test accuracy" in mlp["lossSeries"]


@pytest.mark.skipif(sys.platform != "linux", reason="flock")
def test_the_time_profile_follows_the_rows_as_they_arrive(tmp_path):
    served = tmp_path / "served"
    run_dir = served / "lstm"
    run_dir.mkdir(parents=True)
    config = rr.lstm_config()
    records.write_json(run_dir / records.CONFIG, config)
    rr.write_rows(run_dir, [rr.lstm_probe(0)])
    # Another process holds the run's lock: it trains, the stream follows it.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from vanishing import records; "
            "assert records.lock_run(Path(sys.argv[1])) is not None; print('held', flush=True); "
            "sys.stdin.read()",
            str(run_dir),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    app, sock, token = app_on(served, tmp_path / "out")
    sync_playwright, _ = browser_or_skip()
    errors: list[str] = []
    seen = []
    panel = '.panel[data-run="1/lstm"]'
    try:
        assert holder.stdout.readline().strip() == "held"
        with serving(app, sock) as url, sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                page = new_page(browser, errors)
                page.goto(f"{url}/?token={token}")
                page.click('#list li[data-path="1/lstm"] .open')
                rows = [[], [rr.lstm_probe(10)], [rr.epoch_row(1, 10, False), rr.lstm_probe(20)]]
                for rows_now, step in zip(rows, rr.LSTM_PROBES, strict=True):
                    rr.write_rows(run_dir, rows_now)
                    page.wait_for_function(
                        """([panel, step]) => {
                            const p = document.querySelector(panel);
                            return p && p.querySelector('.time').dataset.step === step
                                && p.querySelector('canvas.time-heatmap').dataset.step === step
                                && p.querySelector('.gates').dataset.step === step
                                && p.querySelector('.time canvas');
                        }""",
                        arg=[panel, str(step)],
                    )
                    seen.append(page.eval_on_selector(panel, PANEL))
                status = page.text_content(f"{panel} .status")
                # It finishes as the trainer does: its result, then it lets go of the lock.
                rr.write_rows(run_dir, [rr.epoch_row(2, 20, False)])
                rr.write_result(run_dir, config, records.read_metrics(run_dir))
                holder.stdin.close()
                holder.wait(30)
                page.wait_for_function(
                    "panel => document.querySelector(panel + ' .status').textContent === 'ok'",
                    arg=panel,
                )
            finally:
                browser.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert errors == []
    assert status == f"running in another process (pid {holder.pid})"
    for shown, step in zip(seen, rr.LSTM_PROBES, strict=True):
        factor = rr.FACTORS[step]
        per_step = f"{factor:g}"
        ratio = re.search(r"lstm 1: the gradient reaching t = 1 is (\S+) of", shown["timeRatio"])
        assert ratio and float(ratio.group(1)) == pytest.approx(factor ** (rr.STEPS - 1), rel=1e-2)
        assert f"({per_step} per step)" in shown["timeRatio"]
        values = json.loads(shown["time"]["values"])
        assert values[1][0] == pytest.approx(rr.time_norm(step, 1, 1), rel=1e-12)
        assert shown["gates"][2][:4] == [
            "lstm 1",
            "forget",
            f"{rr.gates(step, 0)['forget']:.2f}",
            "0.50",
        ]
    assert [shown["heat"]["scale"] for shown in seen] == ["[-11,-1]", "[-7,-1]", "[-4,-1]"]


def form_state(page) -> dict:
    return page.evaluate(
        """() => ({
            hidden: document.querySelector('input[name="hidden"]').value,
            activations: [...document.querySelectorAll('input[name="activations"]')]
                .filter(b => b.checked).map(b => b.value),
            url: location.search,
        })"""
    )


def test_the_form_offers_the_recurrent_settings_and_leaves_their_defaults_to_the_parser(
    tmp_path,
):
    served = tmp_path / "served"
    served.mkdir()
    app, sock, token = app_on(served, tmp_path / "out")
    sync_playwright, _ = browser_or_skip()
    errors: list[str] = []
    posted: list[dict] = []

    def refuse(route, request) -> None:  # what the form sends, answered without training
        posted.append(request.post_data_json)
        route.fulfill(
            status=400, content_type="application/json", body='{"error": "held by the test"}'
        )

    with serving(app, sock) as url, sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = new_page(browser, errors)
            page.goto(f"{url}/?token={token}")
            page.wait_for_selector('select[name="arch"]')
            options = {
                name: page.eval_on_selector_all(
                    f'select[name="{name}"] option', "os => os.map(o => o.value)"
                )
                for name in ("arch", "sequence", "dataset")
            }
            inputs = {
                name: page.is_visible(f'input[name="{name}"]')
                for name in ("length", "forget_bias", "train_size", "test_size")
            }
            states = {"mlp": form_state(page)}
            page.route("**/api/runs", refuse)
            page.select_option('select[name="arch"]', "rnn")
            states["rnn"] = form_state(page)
            page.fill('input[name="train_size"]', "100")
            page.click("#start")
            page.wait_for_selector("#form-error:not([hidden])")
            refused = page.text_content("#form-error")
            page.select_option('select[name="arch"]', "lstm")
            page.check('input[name="activations"][value="sigmoid"]')
            page.unroute("**/api/runs")
            page.click("#start")  # the server's one line: an LSTM takes no sigmoid
            page.wait_for_function(
                "() => document.getElementById('form-error').textContent.includes('lstm cells')"
            )
            gated = page.text_content("#form-error")
            page.uncheck('input[name="activations"][value="sigmoid"]')
            page.select_option('select[name="arch"]', "mlp")
            states["back"] = form_state(page)
            page.select_option('select[name="sequence"]', "pixels")
            page.click("#start")
            page.wait_for_function(
                "() => document.getElementById('form-error').textContent.includes('--sequence')"
            )
            sequence = page.text_content("#form-error")
            # An address holding an arch: its defaults first, what the address gives over them.
            page.goto(f"{url}/?arch=gru&hidden=64,64")
            page.wait_for_selector('select[name="arch"]')
            states["gru"] = form_state(page)
            page.goto(f"{url}/?arch=rnn&activations=relu")
            page.wait_for_selector('select[name="arch"]')
            states["irnn"] = form_state(page)
        finally:
            browser.close()
    assert errors == [] or all("400" in e for e in errors), errors  # the refusals' console lines

    assert options["arch"] == list(ARCHS)
    assert options["sequence"] == ["none", *SEQUENCES]
    assert options["dataset"] == choices_of("dataset")  # the adding problem once it is listed
    assert all(inputs.values()), inputs
    assert states["mlp"]["hidden"] == "520,320,240,120" and states["mlp"]["activations"] == ["relu"]
    # A recurrent network shows its own defaults and sends neither: the parser applies them.
    hidden = ",".join(map(str, RECURRENT_HIDDEN))
    assert states["rnn"]["hidden"] == hidden and states["rnn"]["activations"] == ["tanh"]
    assert "arch=rnn" in states["rnn"]["url"] and "hidden" not in states["rnn"]["url"]
    assert posted == [{"runs": [{"arch": "rnn", "train_size": "100"}], "resume": False}]
    (config,), resume = parse_request(posted[0])
    assert (config.arch, config.activation, config.hidden) == ("rnn", "tanh", RECURRENT_HIDDEN)
    assert (config.train_size, config.sequence, resume) == (100, "rows", False)
    assert refused == "held by the test"
    assert gated.startswith("lstm cells use their own tanh and sigmoid: --activation applies to")
    assert gated.endswith("got sigmoid")
    assert states["back"]["hidden"] == "520,320,240,120"
    assert states["back"]["activations"] == ["relu"]
    assert sequence == (
        "--sequence applies to recurrent networks (--arch rnn, lstm or gru); an MLP reads the "
        "whole image at once"
    )
    assert states["gru"]["hidden"] == "64,64" and states["gru"]["activations"] == ["tanh"]
    assert states["irnn"]["hidden"] == hidden and states["irnn"]["activations"] == ["relu"]
