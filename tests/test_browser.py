"""The report in a real browser (Debian's chromium, driven by playwright): no errors, figures load.

CI installs chromium and must run this; elsewhere it is skipped when chromium is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_report import (
    DEPTH_ACCURACIES,
    DEPTH_QUESTIONS,
    QUESTIONS,
    make_sweep,
    write_depth_run,
    write_run,
)
from vanishing import reporting as report

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: CI runs as root in a container; nothing else may reach the network or a GPU.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]


def browser_or_skip() -> tuple[object, Path]:
    """playwright's sync API and the chromium binary; skip (outside CI only) when either lacks."""
    executable = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not executable.exists() and not os.environ.get("CI"):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI installs it")
    return sync_playwright, executable


def load_page(html_path: Path, screenshot: Path) -> dict[str, object]:
    """Open the page in chromium: console errors, requests, images' alt texts and widths, title."""
    sync_playwright, executable = browser_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            widths = page.eval_on_selector_all(
                "figure img", "images => images.map(i => i.complete ? i.naturalWidth : 0)"
            )
            alts = page.eval_on_selector_all("figure img", "images => images.map(i => i.alt)")
            title = page.title()
            page.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("VANISHING_SCREENSHOT"):
                page.screenshot(path=os.environ["VANISHING_SCREENSHOT"], full_page=True)
        finally:
            browser.close()
    return {"errors": errors, "requests": requests, "widths": widths, "alts": alts, "title": title}


def test_report_renders_in_chromium(tmp_path):
    browser_or_skip()
    root = make_sweep(tmp_path / "sweep")
    write_run(root / "leaky_relu-seed0", "leaky_relu", 0, 0.97)
    html_path, _ = report.write_report([root], tmp_path / "report.html")
    screenshot = tmp_path / "report.png"
    loaded = load_page(html_path, screenshot)

    assert loaded["errors"] == []
    assert loaded["alts"] == QUESTIONS
    widths = loaded["widths"]
    assert len(widths) == len(QUESTIONS) and all(w > 0 for w in widths), widths
    # Offline: the page itself and its data: images, nothing fetched from anywhere else.
    requests = loaded["requests"]
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert loaded["title"].startswith("Vanishing gradients: Sigmoid, ReLU, LeakyReLU, PReLU")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_depth_sweep_report_renders_in_chromium(tmp_path):
    browser_or_skip()
    root = tmp_path / "depth"
    for activation in ("sigmoid", "relu"):
        for depth, accuracies in DEPTH_ACCURACIES[activation].items():
            for seed, accuracy in enumerate(accuracies[:2]):
                write_depth_run(root, activation, depth, seed, accuracy)
    html_path, _ = report.write_report([root], tmp_path / "report.html")
    loaded = load_page(html_path, tmp_path / "report.png")

    assert loaded["errors"] == []
    assert loaded["alts"][: len(DEPTH_QUESTIONS)] == DEPTH_QUESTIONS
    assert all(w > 0 for w in loaded["widths"]), loaded["widths"]
    assert all(url.startswith(("file:", "data:")) for url in loaded["requests"])
    assert loaded["title"] == "Vanishing gradients: Sigmoid, ReLU on mnist, 2 to 10 hidden layers"
