"""A damaged or hand-edited record (a string or a table where a number or a list of numbers
belongs) reads as a missing number: the report, the verdict and the live line still come out,
with no traceback."""

from __future__ import annotations

import json

from test_diagnosis import write_run
from vanishing import records
from vanishing.frontends.cli import main
from vanishing.reporting.verdict.live import live_headline


def damage(run_dir):
    """Every list and number of every metrics row becomes text, every list of result.json a
    table (the epoch numbers and steps kept, so that rows still order)."""
    path = run_dir / records.METRICS
    rows = records.read_metrics(run_dir)
    for row in rows:
        for key, value in list(row.items()):
            if isinstance(value, list) and key != "activation_histogram":
                row[key] = "x"
            elif isinstance(value, (int, float)) and key not in ("step", "epoch"):
                row[key] = "y"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = records.read_json(run_dir / records.RESULT)
    for key, value in list(result.items()):
        if isinstance(value, list) and key != "history":
            result[key] = {"a": 1}
    records.write_json(run_dir / records.RESULT, result)
    return rows


def test_wrong_types_in_records_read_as_missing_numbers(tmp_path, capsys):
    run_dir = write_run(
        tmp_path / "run", depth=4, later_norms=[[0.1] * 5], update_ratios=[[0.01] * 5] * 2
    )
    rows = damage(run_dir)
    assert main(["report", str(run_dir), "--out", str(tmp_path / "page.html")]) == 0
    assert "report in" in capsys.readouterr().out
    assert "Traceback" not in (tmp_path / "page.html").read_text()
    probes = [row for row in rows if row["kind"] == "probe"]
    assert live_headline(probes, records.read_json(run_dir / records.CONFIG)) == (
        "No gradient measured at step 0."
    )
