"""Run records on disk: written by training, read by everything else.

A run directory holds `config.json` (written first), `metrics.jsonl` (append-only, one row per
probe and per epoch), `checkpoint.pt` while the run is unfinished (replaced atomically at each
epoch end, deleted when the run ends; it keeps how many bytes of metrics.jsonl it covers and their
CRC-32, so that a resume refuses a metrics file that lost them) and `result.json` (written last,
atomically: a run without it did not finish). A write that fails (a full disk) is a WriteError
naming the file, and leaves no part of it. Non-finite floats (a diverged loss, a ratio over
zero) are written as null, so every file is strict JSON that any reader, a browser included, can
parse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import math
import os
import secrets
import stat
import zlib
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
CHUNK = 1 << 20  # bytes read at once when a file is checked


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
    test_accuracy: float | None  # a fraction, after the last completed epoch; None: regression
    test_loss: float  # mean per-sample cross-entropy (regression: squared error) on the test set
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
    # A recurrent network's (or a watched model's nn.RNN/LSTM/GRU layers'): per recurrent
    # layer, ||dL/dh_t|| for t = 1..T at the first and the last probe, the layers' names and
    # their gates' mean activations (see measure.time). Empty for an MLP and older records.
    time_signal_norms_init: list[list[float]] = field(default_factory=list)
    time_signal_norms_final: list[list[float]] = field(default_factory=list)
    time_layers: list[str] = field(default_factory=list)
    gates_init: list[dict[str, float]] = field(default_factory=list)
    gates_final: list[dict[str, float]] = field(default_factory=list)
    # "regression" (the adding problem: test_accuracy is None, test_loss the mean squared error,
    # baseline_loss that of always answering the targets' mean, 1) or "classification".
    task: str = "classification"
    baseline_loss: float | None = None
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


STATUSES = ("ok", "diverged", "failed")  # what result.json says of a run that ended
# The fields every finished run writes (those without a default in RunResult).
REQUIRED_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(RunResult)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


class WriteError(OSError):
    """A record that could not be written (a full disk); `strerror` names the file, `reason`
    says why (the system's words: "No space left on device")."""

    reason: str = ""


def write_error(path: Path, error: OSError) -> WriteError:
    """The WriteError for `error` while writing `path`."""
    reason = str(error.strerror or error)
    written = WriteError(error.errno, f"cannot write {path}: {reason}")
    written.reason = reason
    return written


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError that `error` is or arose from: torch.save turns a failed write (a full disk)
    into a RuntimeError ("unexpected pos ...") raised while the OSError was being handled."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


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

    An OSError (a full disk), or an error `write` raised because of one (torch.save's), becomes
    a WriteError naming `path`; the temporary file is removed and the old file, if any, stays.
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
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, WriteError):
            raise
        cause = os_error_in(e) if isinstance(e, Exception) else None
        if cause is not None:
            raise write_error(path, cause) from None
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
    checkpoint covers, and appended to from there; a file shorter than that is refused, never
    padded. `crc` is the CRC-32 of the file's bytes so far (a checkpoint keeps it, to tell on
    resume that the rows it covers are still those it recorded).
    """

    def __init__(self, path: Path, offset: int | None = None) -> None:
        self.path = Path(path)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | (0 if offset is not None else os.O_TRUNC)
        try:
            self.fd = os.open(self.path, flags, 0o666)  # less the umask, as every record
        except OSError as e:
            raise write_error(self.path, e) from None
        try:
            self.offset = offset or 0
            size = os.fstat(self.fd).st_size
            if size < self.offset:
                raise metrics_mismatch(
                    self.path, f"it holds {size} bytes, the checkpoint covers {self.offset}"
                )
            os.ftruncate(self.fd, self.offset)  # appends go on from here
            self.crc = file_crc(self.fd, self.offset)
        except OSError as e:
            os.close(self.fd)
            raise write_error(self.path, e) from None
        except BaseException:
            os.close(self.fd)
            raise

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
        self.crc = zlib.crc32(data, self.crc)

    def close(self) -> None:
        os.close(self.fd)


def file_crc(fd: int, size: int) -> int:
    """The CRC-32 of the first `size` bytes of the open file `fd` (read from its start)."""
    crc, done = 0, 0
    while done < size:
        chunk = os.pread(fd, min(CHUNK, size - done), done)
        if not chunk:  # shorter than `size`: the caller checked it is not
            break
        crc, done = zlib.crc32(chunk, crc), done + len(chunk)
    return crc


def metrics_mismatch(path: Path, reason: str) -> UsageError:
    """The refusal to resume a run whose metrics.jsonl is not what its checkpoint covers."""
    return UsageError(
        f"{path} does not match the run's {CHECKPOINT} ({reason}); run without --resume to "
        f"start afresh (a sweep: remove {Path(path).parent / CHECKPOINT}, then --retry-failed)"
    )


MAX_RECORD_BYTES = 64 * 2**20  # config.json and result.json: a few kB; a larger one is damaged
MAX_ROW_BYTES = 16 * 2**20  # one metrics row: a few kB per layer; a longer line is not a row


def loads(text: bytes | str) -> Any:
    """JSON from a record: bytes that are not UTF-8, nesting too deep to parse and numbers too
    long to convert are a ValueError, as malformed JSON is, each saying which."""
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    except ValueError as e:
        raise ValueError(f"not valid JSON ({e})") from None


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def read_json(path: Path, follow: bool = True) -> Any:
    """Read one JSON record. Anything but a regular file (a FIFO is not waited on) of at most
    MAX_RECORD_BYTES holding JSON is a ValueError saying what it is; a file that cannot be
    opened an OSError (FileNotFoundError where there is none). Without `follow`, a symlink is
    not followed (an OSError, ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else NOFOLLOW))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a file")
        if info.st_size > MAX_RECORD_BYTES:
            raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes, not a record")
        data = os.read(fd, info.st_size + 1)  # os.read(n) allocates n bytes: no more than this
    finally:
        os.close(fd)
    return loads(data)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's `metrics.jsonl`. A line that is not a JSON object (a torn last line
    of a killed run, a damaged one, one longer than MAX_ROW_BYTES) is skipped; a metrics.jsonl
    that is not a regular file (a FIFO is not waited on) is a ValueError, as in `read_json`."""
    rows: list[dict[str, Any]] = []
    path = Path(run_dir) / METRICS
    if not path.exists():
        return rows
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a file")
    with os.fdopen(fd, "rb") as f:
        while line := f.readline(MAX_ROW_BYTES + 1):
            if len(line) > MAX_ROW_BYTES:  # skip to the line's end without holding it
                while line and not line.endswith(b"\n"):
                    line = f.readline(MAX_ROW_BYTES)
                continue
            row = parse_row(line)
            if row is not None:
                rows.append(row)
    return rows


def parse_row(line: bytes) -> dict[str, Any] | None:
    """One metrics.jsonl line as a row, None when it is not one: longer than MAX_ROW_BYTES, not
    JSON (not UTF-8, nested beyond the parser) or not a JSON object."""
    if len(line) > MAX_ROW_BYTES:
        return None
    try:
        row = loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def remove(path: Path) -> None:
    """Remove a record if it is there; one that cannot be (a directory in its place) is a
    WriteError naming it."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise write_error(path, e) from None


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
    remove(run_dir / RESULT)  # a rerun is incomplete until done
    if offset is None:
        remove(run_dir / CHECKPOINT)
    for stale in run_dir.glob(f".{CHECKPOINT}.*.tmp"):  # of a run killed mid-save
        remove(stale)
    write_json(run_dir / CONFIG, config.to_dict())
    return MetricsWriter(run_dir / METRICS, offset)


def close_run(result: RunResult, run_dir: Path | str | None) -> RunResult:
    """Finish a run directory: result.json, written last (a run without it did not finish).

    The checkpoint goes once result.json is there: a finished run is never resumed.
    """
    if run_dir is not None:
        result.run_dir = str(run_dir)
        write_json(Path(run_dir) / RESULT, result.to_dict())
        remove(Path(run_dir) / CHECKPOINT)
    return result


def load_checkpoint(
    config: Settings, run_dir: Path | str, device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint in `run_dir` (tensors, plain containers only), None if there is none.

    Everything is checked before it is used, each failure one UsageError naming the file: one
    that is not a checkpoint of this format (`{path}: not a readable checkpoint ({reason})`),
    one written for another config, and a metrics.jsonl that no longer holds the rows the
    checkpoint covers (shorter, cut inside a row, or other bytes: resuming would lose them). The
    checkpoint comes back with its config and log parsed (dicts) and its `path`; whether its
    tensors fit the model is `check_fits`'s to say.
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():  # a directory, a dangling link; a pipe would block the load
        raise unreadable(path, "not a file")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, do not guess
        first = (str(e).strip().splitlines() or [""])[0]  # torch's messages run over many lines
        raise unreadable(path, f"{type(e).__name__}: {first}") from None
    try:
        checkpoint = checked_checkpoint(checkpoint)
    except ValueError as e:
        raise unreadable(path, str(e)) from None
    checkpoint["path"] = str(path)
    wanted = config.to_dict()
    differ = config.differences(checkpoint["config"])
    if differ:
        shown = ", ".join(f"{k}={v!r} (now {wanted.get(k)!r})" for k, v in differ.items())
        raise UsageError(
            f"{path} belongs to a run with another config: {shown}; "
            "run without --resume to start afresh, or remove it"
        )
    check_metrics(run_dir / METRICS, checkpoint["log"])
    # map_location moved every tensor to the device, but a generator takes only a CPU state.
    for key in ("generator", "torch_rng"):
        checkpoint[key] = checkpoint[key].cpu()
    return checkpoint


def unreadable(path: Path | str, reason: str) -> UsageError:
    """The refusal of a checkpoint that is not one this version can continue from."""
    return UsageError(f"{path}: not a readable checkpoint ({reason})")


def checked_checkpoint(checkpoint: Any) -> dict[str, Any]:
    """`save_checkpoint`'s layout, checked (a ValueError says what is wrong): its config and log
    parsed from JSON."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"holds a {type(checkpoint).__name__}, not a dict")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    for key, kind in CHECKPOINT_KEYS.items():
        value = checkpoint[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{key} is a {type(value).__name__}, not a {kind.__name__}")
    checkpoint = dict(checkpoint)
    for key in ("config", "log"):
        try:
            checkpoint[key] = json.loads(checkpoint[key])
        except ValueError:
            raise ValueError(f"{key} is not JSON") from None
        if not isinstance(checkpoint[key], dict):
            raise ValueError(f"{key} is not a JSON object")
    if checkpoint["epoch"] < 1 or checkpoint["step"] < 0:
        raise ValueError(f"epoch {checkpoint['epoch']}, step {checkpoint['step']}")
    offset = checkpoint["log"].get("offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError(f"log offset {offset!r} is not a byte count")
    crc = checkpoint["log"].get("crc")  # older checkpoints have none
    if crc is not None and (not isinstance(crc, int) or isinstance(crc, bool)):
        raise ValueError(f"log crc {crc!r} is not a number")
    for key in ("generator", "torch_rng"):
        state, size = checkpoint[key], torch.Generator().get_state().shape
        if state.dtype != torch.uint8 or state.shape != size:
            raise ValueError(f"{key} is not a random generator's state")
    model = checkpoint["model"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise ValueError("model is not a state dict of tensors")
    optimizer = checkpoint["optimizer"]
    state, groups = optimizer.get("state"), optimizer.get("param_groups")
    if not isinstance(state, dict) or not isinstance(groups, list) or len(groups) != 1:
        raise ValueError("optimizer is not an optimizer's state dict")
    if not isinstance(groups[0], dict) or not isinstance(groups[0].get("params"), list):
        raise ValueError("optimizer is not an optimizer's state dict")
    for index, values in state.items():
        if not isinstance(index, int) or not isinstance(values, dict):
            raise ValueError("optimizer is not an optimizer's state dict")
    return checkpoint


# save_checkpoint's entries and their types.
CHECKPOINT_KEYS: dict[str, type] = {
    "config": str,
    "epoch": int,
    "step": int,
    "model": dict,
    "optimizer": dict,
    "generator": torch.Tensor,
    "torch_rng": torch.Tensor,
    "log": str,
}


def check_metrics(path: Path, log: dict[str, Any]) -> None:
    """Refuse to resume when `path` (metrics.jsonl) does not start with the rows the checkpoint's
    `log` covers: its size, the row ending there and (checkpoints that keep it) the CRC-32 of
    those bytes. Resuming cuts the file back to them and appends; were they gone, the run would
    go on with a file of padding and the report would have no rows for it."""
    offset, crc = log["offset"], log.get("crc")
    if offset == 0:
        return
    if not path.exists():
        raise metrics_mismatch(path, f"it is missing, the checkpoint covers {offset} bytes")
    if not path.is_file():  # a directory; a pipe would block the open
        raise metrics_mismatch(path, "it is not a file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < offset:
                raise metrics_mismatch(
                    path, f"it holds {size} bytes, the checkpoint covers {offset}"
                )
            if os.pread(f.fileno(), 1, offset - 1) != b"\n":
                raise metrics_mismatch(
                    path, f"no row ends at byte {offset}, where the checkpoint's rows end"
                )
            if crc is not None and file_crc(f.fileno(), offset) != crc:
                raise metrics_mismatch(
                    path, f"its first {offset} bytes are not the rows the checkpoint covers"
                )
    except OSError as e:  # a directory, no permission
        raise metrics_mismatch(path, f"cannot read it: {e.strerror or e}") from None


def check_fits(checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    """Refuse (`{path}: not a readable checkpoint (...)`) a checkpoint whose tensors do not fit
    `model`: its state's names and shapes, and its optimizer state's parameter count and shapes
    (`model.parameters()` order, as a single model's optimizer holds them)."""
    path = checkpoint["path"]
    wanted = model.state_dict()
    saved = checkpoint["model"]
    if set(saved) != set(wanted):
        names = sorted(set(saved) ^ set(wanted))
        raise unreadable(path, f"model tensors {', '.join(names[:4])} do not fit the model")
    for name, tensor in wanted.items():
        if saved[name].shape != tensor.shape:
            raise unreadable(
                path,
                f"model tensor {name} has shape {tuple(saved[name].shape)}, "
                f"the model {tuple(tensor.shape)}",
            )
    parameters = list(model.parameters())
    optimizer = checkpoint["optimizer"]
    if len(optimizer["param_groups"][0]["params"]) != len(parameters):
        raise unreadable(path, "optimizer state is for another number of parameters")
    for index, values in optimizer["state"].items():
        if not 0 <= index < len(parameters):
            raise unreadable(path, f"optimizer state for parameter {index} of {len(parameters)}")
        shape = parameters[index].shape
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != shape:
                raise unreadable(
                    path,
                    f"optimizer {name} of parameter {index} has shape {tuple(value.shape)}, "
                    f"the parameter {tuple(shape)}",
                )


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


def read_result(run_dir: Path | str) -> dict[str, Any] | None:
    """The run's result.json as a dict, None when there is none or it holds no result: not
    readable JSON, not an object (null, a list), a config that is no object, no status, or a
    finished run's fields missing (a failed run's record has fewer: `status` "failed" and its
    `error`). Such a run has no result to keep; training it again replaces the file."""
    path = Path(run_dir) / RESULT
    if not path.is_file():
        return None
    try:
        values = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict) or not isinstance(values.get("config"), dict):
        return None
    status = values.get("status")
    if status not in STATUSES:
        return None
    if status != "failed" and not set(REQUIRED_FIELDS) <= set(values):
        return None
    return values


def load_result(config: Settings, run_dir: Path | str) -> RunResult | None:
    """The finished result in `run_dir` for this config (device aside), None if there is none
    (a failed run's, or a result.json that holds no result: `read_result`)."""
    values = read_result(run_dir)
    if values is None or values["status"] == "failed" or not same_config(values["config"], config):
        return None  # another run's result, or none: train this one afresh
    known = {f.name for f in dataclasses.fields(RunResult)}
    values = {k: v for k, v in values.items() if k in known}
    regression = values.get("task") == "regression"  # its accuracy is None: it has none
    for key in ("test_accuracy", "test_loss", "vanishing_ratio_init"):
        if key == "test_accuracy" and regression:
            values[key] = None
        elif not isinstance(values.get(key), (int, float)) or isinstance(values[key], bool):
            values[key] = float("nan")  # written as null when non-finite
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
