"""`vanishing live` in a real browser: the real server, real MNIST, Debian's chromium.

The page starts sigmoid and ReLU at depth 10 and must show, read from its DOM, sigmoid's first
layer getting under 1e-3 of the output layer's gradient and ReLU's over 0.1, and beside it each
layer's update ratio; then a finished run opened from the list draws its charts. A watched model
and a trainer's MLP opened side by side name their layers with the server's names and no others,
and chart the update ratios their records hold (a model watched without its optimizer: none).
CI installs chromium and must run this; elsewhere it is skipped when chromium or playwright is
missing. VANISHING_SCREENSHOTS=1 also writes the README's docs/live.png and docs/live-finished.png.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from starlette.applications import Starlette
from torch import nn
from torch.nn import functional as F

import vanishing
from conftest import write_arrays
from test_browser import CHROMIUM_ARGS, browser_or_skip
from vanishing import records
from vanishing.data.datasets import load_dataset
from vanishing.frontends.live import create_app
from vanishing.frontends.live.server import bind
from vanishing.settings.config import TrainConfig
from vanishing.settings.naming import LayerNames
from vanishing.training.loop import train

DOCS = Path(__file__).resolve().parents[1] / "docs"
TIMEOUT_MS = 45_000  # the whole test stays under a minute on 2 busy cores


@dataclasses.dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    token: str
    finished_step: int  # the finished run's last probe
    histograms: bool  # whether its probes carry activation histograms
    finished_updates: list[float]  # the finished run's update ratios at its last probe


@pytest.fixture
def live_server(tmp_path, real_mnist) -> Iterator[Server]:
    """The real app on uvicorn in a thread, on a free port: --out is tmp_path/live (empty), the
    second served directory holds one finished run; training reads real MNIST from IDX files."""
    data_dir = write_arrays(
        tmp_path / "mnist",
        {
            role: getattr(real_mnist, role).numpy().astype("uint8")
            for role in ("train_images", "train_labels", "test_images", "test_labels")
        },
    )
    finished = tmp_path / "finished"
    # A finished run to open from the list: sigmoid on the first 640 images, probed every step.
    small = dataclasses.replace(
        real_mnist,
        train_images=real_mnist.train_images[:640],
        train_labels=real_mnist.train_labels[:640],
        test_images=real_mnist.test_images[:200],
        test_labels=real_mnist.test_labels[:200],
    )
    config = TrainConfig(
        activation="sigmoid", hidden=(64,) * 6, epochs=1, probe_every=2, device="cpu"
    )
    train(config, dataset=small, run_dir=finished / "sigmoid-small")
    rows = records.read_metrics(finished / "sigmoid-small")

    token = secrets.token_urlsafe(16)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(
        [finished],
        tmp_path / "live",
        token=token,
        port=port,
        workers=2,
        data_options={"data_dir": data_dir, "verify": False},
    )
    with serving(app, sock) as url:
        histograms = any("activation_histogram" in row for row in rows)
        probes = [row for row in rows if row["kind"] == "probe"]
        yield Server(url, token, last_probe_step(rows), histograms, probes[-1]["update_ratio"])


@contextlib.contextmanager
def serving(app: Starlette, sock) -> Iterator[str]:
    """The app on uvicorn in a thread, on the bound socket `sock`: its http://127.0.0.1:PORT."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        app.state.live.interrupt()  # ends the streams and stops the training
        server.should_exit = True
        thread.join(30)
        app.state.live.close(30)
        sock.close()


def last_probe_step(rows) -> int:
    return [row["step"] for row in rows if row["kind"] == "probe"][-1]


def profiles(page) -> dict[str, dict[str, str]]:
    """Each panel's label -> its gradient profile's data-ratio and data-step (absent: '')."""
    return page.eval_on_selector_all(
        ".panel",
        """panels => Object.fromEntries(panels.map(p => [p.querySelector('h2').textContent, {
            ratio: p.querySelector('.profile').dataset.ratio || '',
            step: p.querySelector('.profile').dataset.step || '',
            heatmap: p.querySelector('canvas.heatmap').toDataURL(),
        }]))""",
    )


def screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("VANISHING_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name), full_page=True)


@pytest.mark.realdata
def test_live_page_shows_sigmoid_vanishing_and_relu_not(live_server, tmp_path):
    sync_playwright, executable = browser_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))

            # The settings come from the URL; the token leaves the address bar, the settings stay.
            page.goto(f"{live_server.url}/?token={live_server.token}&probe_every=10&epochs=1")
            page.wait_for_selector("#sections fieldset")
            assert page.input_value('input[name="probe_every"]') == "10"
            assert "token" not in page.url and "probe_every=10" in page.url
            page.wait_for_selector("#list li.item")
            # The first load: the page, its script, styles and uPlot, the settings and the list.
            weight = page.evaluate(
                """() => [...performance.getEntriesByType('navigation'),
                          ...performance.getEntriesByType('resource')]
                    .reduce((total, entry) => total + entry.encodedBodySize, 0)"""
            )
            assert 50_000 < weight < 300_000, weight
            page.fill('input[name="depth"]', "10")
            page.check('input[name="activations"][value="sigmoid"]')
            page.check('input[name="activations"][value="relu"]')
            assert "activations=sigmoid,relu" in page.url and "depth=10" in page.url
            page.click("#start")
            page.wait_for_selector(".panel:nth-child(3)", state="attached")  # welcome, 2 panels

            # The first probe on screen, then sigmoid vanishing and ReLU not, as the page shows it.
            # Functions, not expressions: playwright evals an expression, which the page's
            # Content-Security-Policy (script-src 'self') refuses.
            page.wait_for_function(
                "() => [...document.querySelectorAll('.profile')].every(p => p.dataset.step)"
            )
            first = profiles(page)
            page.wait_for_function(
                """() => {
                    const ratio = label => Number(
                        [...document.querySelectorAll('.panel')]
                            .find(p => p.querySelector('h2').textContent.startsWith(label))
                            .querySelector('.profile').dataset.ratio);
                    return ratio('Sigmoid') < 1e-3 && ratio('ReLU') > 0.1;
                }"""
            )
            page.wait_for_function(
                "() => [...document.querySelectorAll('.verdict')]"
                ".every(v => v.classList.contains('said'))"
            )
            # Then a later probe (the conditions above can already hold at step 0).
            page.wait_for_function(
                """step => Number([...document.querySelectorAll('.panel')]
                    .find(p => p.querySelector('h2').textContent.startsWith('ReLU'))
                    .querySelector('.profile').dataset.step) > step""",
                arg=int(first["ReLU"]["step"]),
            )
            later = profiles(page)
            assert sorted(later) == ["ReLU", "Sigmoid"], later
            # Beside each gradient profile, how far the step moved each of the 11 layers.
            updates = page.eval_on_selector_all(
                ".panel .steps", "boxes => boxes.map(b => JSON.parse(b.dataset.values || '[]'))"
            )
            assert [len(values) for values in updates] == [11, 11], updates
            assert all(v is not None and v > 0 for values in updates for v in values), updates
            relu_first, relu_later = first["ReLU"], later["ReLU"]
            assert int(relu_later["step"]) > int(relu_first["step"])  # it needs training: > step 0
            assert relu_later["heatmap"] != relu_first["heatmap"]  # a column per probe
            screenshot(page, tmp_path, "live.png")

            page.click("#stop")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.panel .status')]"
                ".every(s => !['running', 'waiting', ''].includes(s.textContent))"
            )
            assert page.is_enabled("#resume")

            # A finished run from the list replaces the live ones and draws from its records.
            page.click('#list li[data-path="1/sigmoid-small"] .open')
            page.wait_for_function(
                """step => {
                    const panels = document.querySelectorAll('.panel');
                    return panels.length === 1
                        && panels[0].querySelector('.status').textContent === 'ok'
                        && panels[0].querySelector('.profile').dataset.step === String(step);
                }""",
                arg=live_server.finished_step,
            )
            drawn = page.eval_on_selector_all(".panel canvas", "cs => cs.map(c => c.width)")
            assert drawn and all(width > 0 for width in drawn), drawn
            assert page.locator(".panel .uplot").count() >= 3  # profile, loss, fractions
            assert float(page.get_attribute(".panel .profile", "data-ratio")) > 0
            shown = json.loads(page.get_attribute(".panel .steps", "data-values"))
            assert shown == pytest.approx(live_server.finished_updates, rel=1e-12)
            if live_server.histograms:  # the probes record each layer's activation histogram
                assert page.is_visible(".panel .histogram-card canvas")
            screenshot(page, tmp_path, "live-finished.png")
        finally:
            browser.close()

    assert errors == []
    # Offline: every request went to the server itself (or was inline data).
    assert all(url.startswith((live_server.url + "/", "data:")) for url in requests), requests


# What a panel draws on its canvases that is not a layer's name: the axes' titles, numbers
# ('1e-4', '0.5', '50%', '1,000') and steps.
TITLES = {"layer", "hidden layer", "‖∇W‖", "‖ΔW‖/‖W‖", "step", "loss", "test accuracy"}
NUMBER = re.compile(r"-?[\d,]+(\.\d+)?(e-?\d+)?%?|step \d+")
# Every text drawn on a canvas, kept on the canvas element for the test to read.
RECORD_CANVAS_TEXT = """
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
  (this.canvas.drawnTexts ||= []).push(String(text));
  return fillText.call(this, text, ...rest);
};
"""
DRAWN = """panel => {
    const texts = selector => [...new Set([...panel.querySelectorAll(selector)]
        .flatMap(c => c.drawnTexts || []))];
    return {
        all: texts('canvas'), profile: texts('.profile canvas'), heatmap: texts('canvas.heatmap'),
        fractions: texts('.fractions canvas'), histograms: texts('canvas.histograms'),
        steps: texts('.steps canvas'), ratio: panel.querySelector('.ratio').textContent,
        moves: panel.querySelector('.moves').textContent, text: panel.innerText,
        updates: JSON.parse(panel.querySelector('.steps').dataset.values || 'null'),
        series: [...panel.querySelectorAll('.steps .u-series th')].map(th => th.textContent),
    };
}"""


def watched_sequential(run_dir: Path, with_optimizer: bool = True) -> None:
    """A user's nn.Sequential watched for 4 steps: its layers are named by index ('1', '3');
    watched without its optimizer, its records hold no update ratio."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    watched = optimizer if with_optimizer else None
    with vanishing.watch(model, watched, every=1, out=run_dir):
        for _ in range(4):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


def test_panels_name_layers_with_the_servers_names_only(tmp_path, tiny_dir):
    served = tmp_path / "served"
    watched_sequential(served / "watched")
    watched_sequential(served / "bare", with_optimizer=False)
    config = TrainConfig(
        activation="sigmoid", hidden=(16, 16, 16), epochs=1, batch_size=64, probe_every=2
    )
    train(
        dataclasses.replace(config, device="cpu"),
        dataset=load_dataset(data_dir=tiny_dir, verify=False),
        run_dir=served / "mlp",
    )
    # The names the server sends: the same words the report's sentences use.
    numbered = ["layer 1", "layer 2", "layer 3"]
    expected = {
        "1/watched": (["module 1", "module 3", "module 5"], ["module 1", "module 3"]),
        "1/mlp": ([*numbered, "the output layer"], numbered),
    }
    for run, names in expected.items():
        assert LayerNames.listed(records.read_json(served / run[2:] / records.CONFIG)) == names
    probes = {
        run: [row for row in records.read_metrics(served / run[2:]) if row["kind"] == "probe"]
        for run in expected
    }
    histograms = {run: any("activation_histogram" in r for r in probes[run]) for run in expected}
    sock = bind("127.0.0.1", 0)
    token = secrets.token_urlsafe(16)
    app = create_app([served], tmp_path / "out", token=token, port=sock.getsockname()[1])
    sync_playwright, executable = browser_or_skip()
    with serving(app, sock) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.add_init_script(RECORD_CANVAS_TEXT)
            page.goto(f"{url}/?token={token}")
            page.click('#list li[data-path="1/watched"] .open')
            page.click('#list li[data-path="1/mlp"] .beside')
            page.click('#list li[data-path="1/bare"] .beside')
            page.wait_for_function(
                """() => ['1/watched', '1/mlp', '1/bare'].every(run => {
                    const panel = document.querySelector(`.panel[data-run="${run}"]`);
                    return panel && panel.querySelector('.status').textContent === 'ok'
                        && panel.querySelector('.profile canvas')
                        && (run === '1/bare' || panel.querySelector('.steps canvas'));
                })"""
            )
            page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            drawn = {
                run: page.eval_on_selector(f'.panel[data-run="{run}"]', DRAWN) for run in expected
            }
            # Watched without its optimizer: no step recorded, no chart of it (not an empty one).
            bare = page.eval_on_selector(
                '.panel[data-run="1/bare"]',
                """p => [p.querySelector('.steps-card').hidden, !!p.querySelector('.steps canvas'),
                         p.querySelector('.profile').dataset.step]""",
            )
        finally:
            browser.close()

    assert errors == []
    for run, (weighted, hidden) in expected.items():
        shown = drawn[run]
        # Every text a panel draws is blank, a number, a title or a name the server sent for it.
        sent = {*weighted, *hidden}
        made_up = [
            t for t in shown["all"]
            if t.strip() and not (NUMBER.fullmatch(t) or t in TITLES or t in sent)
        ]  # fmt: skip
        assert made_up == [], (run, made_up)
        # The first and the last layer are named on the axes and beside the heatmap's rows,
        ends = {weighted[0], weighted[-1]}
        assert ends <= set(shown["profile"]) and ends <= set(shown["heatmap"]), (run, shown)
        assert {hidden[0], hidden[-1]} <= set(shown["fractions"]), (run, shown)
        if histograms[run]:  # each hidden layer's histogram under its name
            assert set(hidden) <= set(shown["histograms"]), (run, shown)
        # and the sentence under the profile compares them by the same names.
        ratio = re.fullmatch(r"At step \d+, (.+) gets \S+ of (.+)'s gradient\.", shown["ratio"])
        assert ratio and ratio.groups() == (weighted[0], weighted[-1]), (run, shown["ratio"])
        # Beside it, the update ratio of every weighted layer at the last probe, as recorded,
        # with the first probe's for comparison, on axes named the same way.
        last = probes[run][-1]["update_ratio"]
        assert shown["updates"] == pytest.approx(last, rel=1e-12), (run, shown["updates"])
        assert shown["series"] == ["now", f"step {probes[run][0]['step']}"], (run, shown)
        assert ends <= set(shown["steps"]), (run, shown)
        moves = re.fullmatch(
            r"At step (\d+), (.+) moves (\S+) times as far as (.+), for its size\.", shown["moves"]
        )
        assert moves and moves.group(2, 4) == (weighted[0], weighted[-1]), (run, shown["moves"])
        assert int(moves.group(1)) == probes[run][-1]["step"]
        assert float(moves.group(3)) == pytest.approx(last[0] / last[-1], rel=0.01)
    assert bare == [True, False, "3"], bare
    # A watched model's panel numbers no layer of its own ('layer 3', 'the output layer', 'out').
    assert not re.search(r"\blayer \d|output layer|\bout\b", drawn["1/watched"]["text"])
