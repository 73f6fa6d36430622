"""Run records on disk: written by training, read by everything else.

A run directory holds `config.json` (written first), `metrics.jsonl` (append-only, one row per
probe and per epoch), `checkpoint.pt` while the run is unfinished (replaced atomically at each
epoch end, deleted when the run ends) and `result.json` (written last, atomically: a run without
it did not finish). Non-finite floats (a diverged loss, a ratio over zero) are written as null,
so every file is strict JSON that any reader, a browser included, can parse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import torch

from vanishing.errors import UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, one writer per directory by hand
    fcntl = None  # type: ignore[assignment]

CONFIG, METRICS, RESULT = "config.json", "metrics.jsonl", "result.json"
CHECKPOINT, LOCK = "checkpoint.pt", ".lock"


class Config(Protocol):
    """A run's settings as records need them (`settings.config.TrainConfig`)."""

    def to_dict(self) -> dict[str, Any]: ...


class Settings(Config, Protocol):
    """Settings that can tell how a record's config differs from them (`TrainConfig`)."""

    def differences(self, saved: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class RunResult:
    """What one run produced; written as `result.json`."""

    status: str  # "ok" or "diverged"
    test_accuracy: float  # a fraction, after the last completed epoch
    test_loss: float  # mean per-sample cross-entropy on the test set
    history: list[dict[str, Any]]  # per epoch: epoch, train_loss, test_loss, test_accuracy, ...
    grad_norms_init: list[float]  # per Linear layer, input first, at step 0
    vanishing_ratio_init: float  # grad_norms_init[0] / grad_norms_init[-1]
    signal_norms_init: list[float]  # dLoss/dh per hidden layer at step 0
    grad_norms_final: list[float]  # at the last probe
    saturated_fraction: list[float]  # per hidden layer, at the last probe
    dead_fraction: list[float]  # per hidden layer, over the whole training set, last epoch end
    steps: int
    train_seconds: float  # optimisation steps only
    eval_seconds: float  # test-set evaluation and the epoch-end dead-unit count
    probe_seconds: float  # the probes every `probe_every` steps
    device: str
    versions: dict[str, str]
    config: dict[str, Any]
    diverged_step: int | None = None
    # For a diverged run: the step, grad_norms and weight_norms (per Linear layer) of the last
    # probe at which the loss, the gradients and the weights were all still finite.
    norms_before_divergence: dict[str, Any] | None = None
    error: str | None = None
    # Steps whose gradient norm was above --clip-grad-norm (and clipped), over the epochs
    # recorded; None without clipping. A default: result.json files older than it still load.
    clipped_steps: int | None = None
    run_dir: str | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _repr_html_(self) -> str:
        """The run in a notebook cell: a small table of what result.json says."""

        def shown(value: float | None, form: str, scale: float = 1.0) -> str:
            # a watch may log none: None, or nan where result.json has no number
            return "–" if value is None or value != value else format(scale * value, form)

        diverged = f" at step {self.diverged_step}" if self.diverged_step is not None else ""
        rows = [
            ("status", self.status + diverged),
            ("test accuracy (%)", shown(self.test_accuracy, ".2f", 100)),
            ("test loss", shown(self.test_loss, ".4g")),
            ("grad ratio L1/Lout at init", shown(self.vanishing_ratio_init, ".3g")),
            ("steps", str(self.steps)),
            ("device", self.device),
            *([("error", self.error)] if self.error else []),
            *([("records", self.run_dir)] if self.run_dir else []),
        ]
        cells = "".join(
            f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
            for name, value in rows
        )
        return f'<table class="vanishing-run">{cells}</table>'


class WriteError(OSError):
    """A record that could not be written (a full disk); `strerror` names the file."""


def write_error(path: Path, error: OSError) -> WriteError:
    """The WriteError for `error` while writing `path`."""
    return WriteError(error.errno, f"cannot write {path}: {error.strerror or error}")


def finite(value: Any) -> Any:
    """The value with every non-finite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of a record."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file atomically: `write` fills a temporary file in the same directory, synced to
    disk, then renamed over `path`. The file gets the mode any new file gets (0666 less the
    umask), as metrics.jsonl and the locks do: a results folder is as shared as the umask says.

    An OSError (a full disk) becomes a WriteError naming `path`; the old file, if any, stays.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from None
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to a file atomically."""
    write_atomic(path, lambda f: f.write(data))


def write_json(path: Path, value: Any) -> None:
    """Write a JSON file atomically."""
    write_bytes(path, (dumps(value, indent=2) + "\n").encode())


class MetricsWriter:
    """Appends rows to `metrics.jsonl`, one whole line per system call, so a crash loses at most
    the row being written; a failed write (a full disk) is cut back off, never left torn. The
    file is opened with O_APPEND: each write lands at its end as one piece, so even two writers
    (which the run's lock refuses) could never interleave inside a line.

    `offset` (bytes) resumes a file: it is cut back to its first `offset` bytes, the rows that a
    checkpoint covers, and appended to from there.
    """

    def __init__(self, path: Path, offset: int | None = None) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if offset is not None else os.O_TRUNC)
        try:
            self.fd = os.open(self.path, flags, 0o666)  # less the umask, as every record
            self.offset = offset or 0
            os.ftruncate(self.fd, self.offset)  # appends go on from here
        except OSError as e:
            raise write_error(self.path, e) from None

    def write(self, row: dict[str, Any]) -> None:
        data = (dumps(row) + "\n").encode()
        try:
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError as e:
            # A partial line would be a torn record: remove it (appends go on from here).
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.offset)
            raise write_error(self.path, e) from None
        self.offset += len(data)

    def close(self) -> None:
        os.close(self.fd)


MAX_RECORD_BYTES = 64 * 2**20  # config.json and result.json: a few kB; a larger one is damaged
MAX_ROW_BYTES = 16 * 2**20  # one metrics row: a few kB per layer; a longer line is not a row


def loads(text: bytes | str) -> Any:
    """JSON from a record: its bytes that are not UTF-8, nesting too deep to parse (a
    RecursionError) and numbers too long to convert are a ValueError, as malformed JSON is."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json(path: Path) -> Any:
    """Read one JSON record (at most MAX_RECORD_BYTES: a larger file is a ValueError, as one
    that is not JSON is)."""
    with open(path, "rb") as f:
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes, not a record")
    return loads(data)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's `metrics.jsonl`. A line that is not a JSON object (a torn last line
    of a killed run, a damaged one, one longer than MAX_ROW_BYTES) is skipped."""
    rows: list[dict[str, Any]] = []
    path = Path(run_dir) / METRICS
    if not path.exists():
        return rows
    with open(path, "rb") as f:
        while line := f.readline(MAX_ROW_BYTES + 1):
            if len(line) > MAX_ROW_BYTES:  # skip to the line's end without holding it
                while line and not line.endswith(b"\n"):
                    line = f.readline(MAX_ROW_BYTES)
                continue
            try:
                row = loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def is_complete(run_dir: Path) -> bool:
    """A run is complete when its result.json exists."""
    return (Path(run_dir) / RESULT).is_file()


def open_run(
    config: Config, run_dir: Path | str | None, offset: int | None = None
) -> MetricsWriter | None:
    """Start a run directory: config.json now, metrics.jsonl as rows come; None without one.

    `offset` resumes metrics.jsonl from a checkpoint (cut back to the rows it covers); without it
    the run starts afresh and an old checkpoint is removed.
    """
    if run_dir is None:
        return None
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(run_dir, e) from None
    (run_dir / RESULT).unlink(missing_ok=True)  # a rerun is incomplete until done
    if offset is None:
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    for stale in run_dir.glob(f".{CHECKPOINT}.*.tmp"):  # of a run killed mid-save
        stale.unlink(missing_ok=True)
    write_json(run_dir / CONFIG, config.to_dict())
    return MetricsWriter(run_dir / METRICS, offset)


def close_run(result: RunResult, run_dir: Path | str | None) -> RunResult:
    """Finish a run directory: result.json, written last (a run without it did not finish).

    The checkpoint goes once result.json is there: a finished run is never resumed.
    """
    if run_dir is not None:
        result.run_dir = str(run_dir)
        write_json(Path(run_dir) / RESULT, result.to_dict())
        (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)
    return result


def load_checkpoint(
    config: Settings, run_dir: Path | str, device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint in `run_dir` (tensors, plain containers only), None if there is none.

    One written for another config is a UsageError, never used.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, do not guess
        first = (str(e).strip().splitlines() or [""])[0]  # torch's messages run over many lines
        raise UsageError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {first})"
        ) from None
    wanted = config.to_dict()
    differ = config.differences(json.loads(checkpoint["config"]))
    if differ:
        shown = ", ".join(f"{k}={v!r} (now {wanted.get(k)!r})" for k, v in differ.items())
        raise UsageError(
            f"{path} belongs to a run with another config: {shown}; "
            "run without --resume to start afresh, or remove it"
        )
    # map_location moved every tensor to the device, but a generator takes only a CPU state.
    for key in ("generator", "torch_rng"):
        checkpoint[key] = checkpoint[key].cpu()
    return checkpoint


def save_checkpoint(
    run_dir: Path | str,
    config: Config,
    epoch: int,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    log_state: dict[str, Any],
) -> None:
    """Everything needed to continue after `epoch`, written atomically as checkpoint.pt.

    Only tensors, dicts, lists, ints and strings, so that `torch.load(weights_only=True)` reads
    it; the run's records (JSON with NaN allowed, exact for floats) go as one string.
    """
    state = {
        "config": json.dumps(config.to_dict()),
        "epoch": epoch,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),  # data order
        "torch_rng": torch.get_rng_state(),  # RReLU's random slopes
        "log": json.dumps(log_state),
    }
    write_atomic(Path(run_dir) / CHECKPOINT, lambda f: torch.save(state, f))


def same_config(saved: dict[str, Any], config: Settings) -> bool:
    """Whether a record's config (as read back from JSON) is `config`, where it runs aside."""
    return not config.differences(saved)


def load_result(config: Settings, run_dir: Path | str) -> RunResult | None:
    """The finished result in `run_dir` for this config (device aside), None if there is none."""
    path = Path(run_dir) / RESULT
    if not path.is_file():
        return None
    values = read_json(path)
    if not same_config(values.get("config", {}), config):
        return None  # another run's result: train this one afresh
    known = {f.name for f in dataclasses.fields(RunResult)}
    values = {k: v for k, v in values.items() if k in known}
    for key in ("test_accuracy", "test_loss", "vanishing_ratio_init"):
        if values.get(key) is None:  # written as null when non-finite
            values[key] = float("nan")
    return RunResult(**values)


def lock_run(run_dir: Path) -> int | None:
    """Take the run's lock (an flock on run_dir/.lock, which holds our pid): its file descriptor,
    or None when another process holds it. Closing the descriptor, or dying, releases it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder(run_dir: Path) -> int | None:
    """The pid written into the run's lock by the process that holds (or last held) it."""
    try:
        return int((Path(run_dir) / LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def hold_run(run_dir: Path, advice: str) -> int:
    """Take the run's lock (`lock_run`) or refuse: a run directory has one writer at a time. The
    refusal names the directory, the process that holds it and what to do (`advice`)."""
    fd = lock_run(Path(run_dir))
    if fd is None:
        pid = lock_holder(run_dir)
        holder = f" (pid {pid})" if pid is not None else ""
        raise UsageError(f"{run_dir} is being written by another process{holder}; {advice}")
    return fd
