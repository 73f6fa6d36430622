"""`vanishing live`: a local web page where you change the network and watch its gradients vanish
as it trains. This package is the server (Starlette on uvicorn); the page lives in `static/`.

Live runs are ordinary run directories under --out (`<out>/<naming.run_name(config)>`, so one
setting is always one directory), trained by the live page's job (`jobs.live`) through the one
executor (`executor.execute`): resume and `vanishing report` work on them as on any other.

The API (JSON unless said; every error is `{"error": "<one line>"}`):

Safety, for every request:
- the token, as `?token=T`, the header `X-Token: T`, or the cookie `vanishing_token` that
  `GET /?token=T` sets (HttpOnly, SameSite=Strict); missing or wrong: 403;
- a Host header other than the server's own host:port (127.0.0.1:PORT, localhost:PORT or
  --host:PORT): 400 (DNS rebinding);
- a POST whose Origin header is present and not the server's origin, or whose Content-Type is
  not application/json: 403;
- every response, a refusal or an error too, carries a Content-Security-Policy that lets only
  the page's own files run or style it (`default-src 'none'; script-src 'self'; ...;
  frame-ancestors 'none'`), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`
  and `X-Frame-Options: DENY`; an error no route caught is a 500 `{"error": "internal error:
  ..."}`;
- every request is one line of the access log (the logger `vanishing.live.access`; `serve`
  writes it to stderr): client, method, path and query with the token's value as `***`, status
  and milliseconds;
- paths from the client (`<root index>/<path inside it>`; root 0 is --out, then each DIR given)
  resolve only inside the served directories: `..`, an absolute path or a symlink leading out is
  400, a directory that does not exist 404.

Routes:
- `GET /`: static/index.html. `GET /static/{path}`: the files under static/ (the page's ES
  modules, main.js first, as text/javascript; uPlot vendored in static/uplot/).
- `GET /api/settings`: `{"fields": [{"name", "kind" ("str"|"int"|"float"|"bool"|"widths"),
  "optional", "default" (as --help shows it), "choices" (a list or null), "help", "section",
  "axis"}], "depth_width": {"default_width": 256}, "arch_defaults": {"rnn": {"activation":
  "tanh", "hidden": "128"}, "mlp": {}, ...}}`, one entry per TrainConfig field, and per arch
  the defaults that differ with it (`model.recurrent.arch_defaults`, which the settings parser
  applies to a run that leaves them out: the form shows them, and sends a setting only where
  it differs from the default shown).
- `POST /api/runs` `{"runs": [{"activation": "sigmoid", "depth": "10", "width": "256",
  "lr": "0.001", ...}, ...], "resume": false}`: 1 to 4 runs; values are text as a form sends
  them (an empty one is left to the default) or JSON numbers and bools; `hidden` or
  `depth`/`width` give the shape; what is missing takes the config's default. A bad value, an
  unknown setting or a run that would not fit in memory (beside what the jobs this server
  already trains need): 400 with the CLI's message. More jobs
  than cores already training: 409. Answers `{"job": "<id>", "runs": [{"run": "0/<run name>",
  "label": "Sigmoid, depth 10"}]}` (one entry per distinct setting).
- `POST /api/jobs/{job}/stop`: stops the job between two steps; its unfinished runs keep their
  checkpoints (status "stopped") and `POST /api/runs` with `"resume": true` finishes them.
  Answers the job as `GET /api/jobs` lists it: `{"jobs": [{"job", "state"
  ("running"|"stopping"|"done"|"stopped"|"failed"), "runs", "error"}]}`.
- `GET /api/events?runs=<run>,<run>`: one Server-Sent Events stream for up to 4 runs. Per run:
  every row of its metrics.jsonl from the start, then each new one as training appends it
  (`event: row`, `{"run", "row"}`), its layers' names once before its first row (`event:
  layers`, `{"run", "weighted", "hidden"}`: `settings.naming.LayerNames.listed`'s, the words the
  report's sentences use, one per entry of a probe row's per-weighted-layer and per-hidden-layer
  lists; the page shows these and no names of its own; a recurrent run's probe rows name
  their recurrent layers themselves, `time_layers`, one per entry of `time_signal_norms`,
  `gates` and `recurrent_norms`, and the page draws those with these names); after each probe
  row
  `event: verdict` `{"run", "headline"}` (`reporting.verdict.live_headline`); `event: status`
  `{"run", "status"}` (running,
  ok, diverged, failed, stopped or unfinished) whenever it changes, with `"note": "in another
  process (pid N)"` while another process (a second server on the same --out, a `vanishing
  train`) holds the run's lock; `event: unreadable` `{"run", "error"}` once for a run whose
  records cannot be read (a damaged config.json or result.json, an unknown status, a
  metrics.jsonl that is not a file: `reading.py`), which ends it; `event: reset` `{"run"}`
  when the file was cut back (the run started afresh, or resumed from its checkpoint): forget
  its rows, they come again; `event: end` `{"runs"}` once every run has finished or its job
  has ended (a finished run replays its rows, then ends). The files are read in a worker
  thread, at most 4 MB of metrics.jsonl per run and poll; a line over 16 MB, or a row that is
  not a JSON object, is skipped.
- `GET /api/list`: `{"items": [{"kind" ("compare"|"sweep"|"run"), "path", "runs", "label",
  "status", "test_accuracy", "test_loss", "baseline_loss" (a regression's: its test loss,
  the mean squared error, and that of always answering 1; its test_accuracy is null),
  "parent" (runs only: the compare or sweep holding it, or null),
  "note" (runs only: the status event's note, or null)}]}`: per served directory, each
  directory holding several runs (a sweep when it has sweep.json; --out's own runs are
  separate live runs, not a compare), then every run. A run whose records cannot be read is
  left out, and said once in the server's log (`vanishing live: skipped <run>: <why>`).

Stopping the server (Ctrl-C, SIGTERM) ends the streams and stops every job (the executor kills
its training children); the runs resume later.
"""

from __future__ import annotations

from vanishing.frontends.live.app import create_app
from vanishing.frontends.live.server import serve

__all__ = ["create_app", "serve"]
