"""Sweeps: grid expansion, TOML, run naming, failures, resume after a kill, Ray, statistics."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import swept
from vanishing import records
from vanishing import reporting as report
from vanishing.errors import UsageError
from vanishing.executor import local
from vanishing.settings import grid, naming
from vanishing.settings.config import TrainConfig

TINY_SETTINGS = {"batch_size": 32, "probe_every": 5, "probe_size": 32, "device": "cpu", "epochs": 1}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def tiny_spec(**changes) -> grid.SweepSpec:
    values = {
        "activations": ("relu", "tanh"),
        "depths": (1, 2),
        "widths": (8,),
        "seeds": (0, 1),
        **TINY_SETTINGS,
        **changes,
    }
    return grid.spec_from_dict(values)


def test_grid_expansion():
    configs = grid.expand(tiny_spec(inits=("default", "he"), lrs=(1e-3, 1e-2)))
    assert len(configs) == 2 * 2 * 2 * 2 * 2  # depths x activations x inits x lrs x seeds
    assert {c.hidden for c in configs} == {(8,), (8, 8)}
    assert {(c.activation, c.init, c.lr, c.seed) for c in configs} == {
        (a, i, lr, s)
        for a in ("relu", "tanh")
        for i in ("default", "he")
        for lr in (1e-3, 1e-2)
        for s in (0, 1)
    }
    assert all(c.epochs == 1 and c.batch_size == 32 for c in configs)
    # Without depths the networks have the `hidden` widths (the reference MLP by default).
    assert {c.hidden for c in grid.expand(grid.spec_from_dict({}))} == {(520, 320, 240, 120)}


def test_toml_file(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(
        'activations = ["sigmoid", "selu"]\ndepths = [3]\nwidths = 16\n'
        "lrs = [1e-3, 0.01]\nseeds = [4]\nepochs = 2\n"
    )
    spec = grid.spec_from_dict(grid.read_toml(path), str(path))
    assert spec.activations == ("sigmoid", "selu") and spec.widths == (16,)
    assert spec.lrs == (1e-3, 0.01) and spec.epochs == 2
    assert len(grid.expand(spec)) == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("activation = ['relu']", "unknown key(s) 'activation'; valid keys: activations, depths"),
        ("activations = ['swish']", "unknown activation 'swish'; choose from: sigmoid"),
        ("inits = ['zeros']", "unknown init 'zeros'; choose from: default"),
        ("epochs = 'two'", "epochs: expected int, got 'two'"),
        ("depths = [0]", "depth"),
        ("lrs = [-1.0]", "learning rate must be a finite number > 0"),
        ("seeds = [true]", "seeds: expected int, got True"),
        ("activations = [", "not valid TOML"),
    ],
)
def test_bad_toml(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(UsageError) as e:
        grid.spec_from_dict(grid.read_toml(path), str(path))
    assert message in str(e.value)


def test_presets_load_and_are_documented():
    names = grid.preset_names()
    assert set(names) >= {"seed", "depth", "init", "glorot", "fashion"}
    depth = grid.load_preset("depth")
    assert depth.depths == (2, 5, 10, 20, 30) and depth.widths == (256,)
    assert len(grid.expand(depth)) == 7 * 5 * 2
    assert grid.load_preset("fashion").dataset == "fashion-mnist"
    for name in names:
        assert grid.load_preset(name).description
    with pytest.raises(UsageError, match="unknown preset 'deep'; choose from: adding, depth"):
        grid.load_preset("deep")


def test_the_remedies_preset_tries_every_cure_on_a_deep_sigmoid_net():
    configs = grid.expand(grid.load_preset("remedies"))
    assert {(c.activation, c.hidden, c.optimizer, c.lr, c.epochs) for c in configs} == {
        ("sigmoid", (256,) * 20, "adam", 1e-3, 1)
    }
    cures = {(c.norm, c.residual, c.init) for c in configs}
    assert cures == {
        (norm, residual, init)
        for norm in ("none", "batch", "layer")
        for residual in (False, True)
        for init in ("default", "kaiming")
    }
    assert {c.seed for c in configs} == {0, 1, 2} and len(configs) == 12 * 3


def test_the_exploding_preset_raises_the_he_init_gain_with_and_without_clipping():
    configs = grid.expand(grid.load_preset("exploding"))
    assert {(c.activation, c.hidden, c.init, c.optimizer, c.lr, c.momentum) for c in configs} == {
        ("relu", (256,) * 30, "kaiming", "sgd", 0.01, 0.9)
    }
    assert {(c.init_gain, c.clip_grad_norm) for c in configs} == {
        (gain, clip) for gain in (1.0, 2**0.5, 2.0) for clip in (None, 1.0)
    }
    assert {c.seed for c in configs} == {0, 1, 2} and len(configs) == 6 * 3


def test_the_optimizers_preset_runs_each_optimizer_at_its_own_learning_rate():
    configs = grid.expand(grid.load_preset("optimizers"))
    cases = {(c.optimizer, c.lr, c.momentum) for c in configs}
    assert cases == {
        ("sgd", 0.1, 0.0),
        ("sgd", 0.01, 0.9),
        ("rmsprop", 1e-3, 0.0),
        ("adam", 1e-3, 0.0),
    }
    assert {(c.activation, c.hidden) for c in configs} == {
        (a, (520, 320, 240, 120)) for a in ("sigmoid", "relu")
    }
    assert len(configs) == 2 * 4 * 2 and len({naming.run_name(c) for c in configs}) == 16


def test_cases_change_settings_together_and_say_what_is_wrong(tmp_path):
    two = [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": "0.001"}]
    spec = grid.spec_from_dict({"activations": ["relu"], "seeds": [0, 1], "cases": two})
    configs = grid.expand(spec)
    assert [(c.seed, c.optimizer, c.lr) for c in configs] == [
        (0, "sgd", 0.1),
        (0, "adam", 1e-3),
        (1, "sgd", 0.1),
        (1, "adam", 1e-3),
    ]
    again = grid.spec_from_dict(json.loads(json.dumps(grid.grid_values(spec))))  # as given again
    assert grid.expand(again) == configs
    assert "cases" not in grid.spec_from_dict({}).to_dict()  # an older sweep.json's keys
    for cases, message in [
        ("sgd", "cases: expected a list of tables of settings, got 'sgd'"),
        ([{}], "cases[1]: give at least one setting"),
        ([{"optimiser": "sgd"}], "cases[1]: unknown setting 'optimiser'; settings: activation"),
        ([{"seed": 3}], "cases[1]: unknown setting 'seed'"),
        ([{"lr": "fast"}], "cases[1].lr: expected float, got 'fast'"),
        ([{"optimizer": "adam", "momentum": 0.9}], "--momentum applies to --optimizer sgd only"),
        ([{"lr": 0.1}, {"lr": 0.1}], "cases: each case once"),
    ]:
        with pytest.raises(UsageError) as raised:
            grid.spec_from_dict({"cases": cases}, "grid.toml")
        assert str(raised.value).startswith(f"grid.toml: {message}"), raised.value
    # A setting given by the cases and by the grid in one file: one place each.
    (tmp_path / "g.toml").write_text("lrs = [0.1]\ncases = [{lr = 0.1}, {optimizer = 'sgd'}]\n")
    with pytest.raises(UsageError, match=r"g.toml: cases\[1\]: lr is set by the grid's lrs"):
        grid.spec_of(file=tmp_path / "g.toml")
    # Given again on the command line, it overrides the file's or preset's cases.
    (tmp_path / "g.toml").write_text("cases = [{lr = 0.1}, {lr = 0.2, optimizer = 'sgd'}]\n")
    given = {"lrs": "0.01", "seeds": "0", "activations": "relu"}
    spec, _ = grid.spec_of(file=tmp_path / "g.toml", given=given)
    assert [(c.lr, c.optimizer) for c in grid.expand(spec)] == [(0.01, "sgd")]
    spec, _ = grid.spec_of("optimizers", given={"lrs": "0.01"})
    assert {(c.optimizer, c.lr, c.momentum) for c in grid.expand(spec)} == {
        ("sgd", 0.01, 0.0),
        ("sgd", 0.01, 0.9),
        ("rmsprop", 0.01, 0.0),
        ("adam", 0.01, 0.0),
    }
    # A setting only the cases give is no axis: a case without it takes its default.
    spec = grid.spec_from_dict({"seeds": [0], "cases": [{"activation": "tanh"}, {"lr": 0.1}]})
    assert [(c.activation, c.lr) for c in grid.expand(spec)] == [("tanh", 1e-3), ("relu", 0.1)]


def test_run_names_are_stable_and_distinct():
    a, b = grid.expand(tiny_spec())[:2]
    assert naming.run_name(a) == naming.run_name(type(a).from_dict(a.to_dict()))
    assert naming.run_name(a) != naming.run_name(b)
    assert naming.run_name(a).startswith("relu-d1w8-default-adam-lr0.001-s0-")
    # The device does not change what a run is.
    cuda = type(a).from_dict({**a.to_dict(), "device": "cuda"})
    assert naming.run_name(cuda) == naming.run_name(a)


# Every preset run's name, hashed: a name that fits a file name (all of these) never changes,
# or the runs already written would not be found again.
PRESET_NAMES = "4a174b208fb1cb5b5c09dfc44f32d1c8bd32611aaaa4a204b8324e8b72e7f634"


RECURRENT_PRESETS = ("adding", "recurrent")


def test_preset_run_names_are_unchanged():
    names = sorted(
        naming.run_name(config)
        for preset in grid.preset_names()
        if preset not in RECURRENT_PRESETS  # the presets of MLPs, as older versions had them
        for config in grid.expand(grid.load_preset(preset))
    )
    assert len(names) == 175 and max(map(len, names)) == 69
    assert hashlib.sha256("\n".join(names).encode()).hexdigest() == PRESET_NAMES


def test_a_name_too_long_for_a_file_is_cut_to_255_bytes_keeping_its_digest():
    """100 distinct widths would make a 400-byte name: the widths token is cut at a width's end
    and marked `+`; the other tokens and the digest (of every setting) stay."""
    config = TrainConfig(hidden=tuple(range(100, 200)), seed=2**64 - 1, lr=0.000123456)
    name = naming.run_name(config)
    assert len(name.encode()) == 254
    widths = "-".join(map(str, range(100, 147)))  # as many whole widths as fit
    assert name.startswith(f"relu-h{widths}+-default-adam-lr0.000123456-s18446744073709551615-")
    assert len(name.rsplit("-", 1)[1]) == 10  # the digest
    other = TrainConfig(hidden=(*range(100, 199), 7), seed=2**64 - 1, lr=0.000123456)
    assert naming.run_name(other) != name  # the same readable part, another digest
    assert naming.run_name(TrainConfig(hidden=tuple(range(100, 140)))).startswith(
        "relu-h100-101-" + "-".join(map(str, range(102, 140))) + "-default-"
    )  # a name that fits is whole


def test_a_sweep_of_90_widths_writes_a_name_a_file_system_takes(tiny_dir, tmp_path):
    from vanishing.frontends.cli import main

    widths = ",".join(["10", "11"] * 45)  # the name's widths alone: 270 bytes
    argv = ["sweep", "--data-dir", str(tiny_dir), "--no-verify", "--hidden", widths,
            "--activations", "relu", "--seeds", "0", "--epochs", "1", "--batch-size", "32",
            "--probe-every", "5", "--probe-size", "32", "--device", "cpu", "--workers", "1",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    (run_dir,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert len(run_dir.name.encode()) <= 255 and run_dir.name.startswith("relu-h10-11-10-")
    assert records.read_json(run_dir / records.RESULT)["status"] == "ok"
    assert main(argv) == 0  # again: it finds that run done, nothing trains
    assert [p for p in (tmp_path / "out").iterdir() if p.is_dir()] == [run_dir]


def test_a_sweep_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("# " + "x" * grid.MAX_TOML_BYTES + "\n")
    with pytest.raises(UsageError) as error:
        grid.spec_of(file=path)
    assert str(error.value) == f"{path}: larger than 1000000 bytes; not a TOML sweep file"
    path.write_text("# a comment just under the limit\nseeds = [0]\n")
    assert grid.spec_of(file=path)[0].seeds == (0,)


def test_sweep_runs_records_failures_and_skips_on_resume(tiny_dir, tmp_path, monkeypatch):
    spec = tiny_spec(activations=("relu", "tanh"), depths=(1,), seeds=(0, 1))
    real_train = local.train  # what the executor calls to train a run alone

    def flaky(config, **kwargs):
        if config.activation == "tanh" and config.seed == 1:
            raise RuntimeError("boom")
        return real_train(config, **kwargs)

    monkeypatch.setattr(local, "train", flaky)
    options = {"data_dir": tiny_dir, "verify": False}
    finished = []
    outcome = swept(
        spec,
        tmp_path,
        workers=1,
        data_options=options,
        on_done=lambda c, d, s: finished.append((c.activation, s)),
    )
    assert outcome.ran == 4 and outcome.skipped == 0
    assert sorted(finished) == [("relu", "ok"), ("relu", "ok"), ("tanh", "failed"), ("tanh", "ok")]
    failed = [r for r in outcome.rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == "RuntimeError: boom"
    with open(tmp_path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {"activation", "depth", "seed", "test_accuracy", "status"} <= set(
        rows[0]
    )
    # Again: nothing runs; with --retry-failed only the failed run runs again.
    monkeypatch.setattr(local, "train", real_train)
    assert swept(spec, tmp_path, workers=1, data_options=options).ran == 0
    again = swept(spec, tmp_path, workers=1, data_options=options, retry_failed=True)
    assert again.ran == 1 and all(r["status"] == "ok" for r in again.rows)
    points = list(read_csv(tmp_path / "points.csv"))
    assert len(points) == 2 and {p["runs"] for p in points} == {"2"}
    pairs = list(read_csv(tmp_path / "pairs.csv"))
    assert [(p["a"], p["b"], p["seeds"]) for p in pairs] == [("relu", "tanh", "2")]


def test_diverged_run_is_recorded(tiny_dir, tmp_path):
    spec = tiny_spec(
        activations=("linear",), depths=(1,), seeds=(0,), optimizers=("sgd",), lrs=(1e12,), epochs=2
    )
    outcome = swept(spec, tmp_path, workers=1, data_options={"data_dir": tiny_dir, "verify": False})
    assert [r["status"] for r in outcome.rows] == ["diverged"]


def test_local_pool_two_workers_and_a_killed_worker(tiny_dir, tmp_path, monkeypatch):
    spec = tiny_spec(activations=("relu", "sigmoid"), depths=(1,), seeds=(0, 1))
    real_train = local.train

    def killer(config, **kwargs):
        if config.activation == "sigmoid" and config.seed == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies without a word
        return real_train(config, **kwargs)

    monkeypatch.setattr(local, "train", killer)  # the forked workers inherit it
    outcome = swept(spec, tmp_path, workers=2, data_options={"data_dir": tiny_dir, "verify": False})
    statuses = sorted((r["activation"], r["seed"], r["status"]) for r in outcome.rows)
    assert statuses == [
        ("relu", 0, "ok"),
        ("relu", 1, "ok"),
        ("sigmoid", 0, "failed"),
        ("sigmoid", 1, "ok"),
    ]
    failed = next(r for r in outcome.rows if r["status"] == "failed")
    assert failed["error"] == "worker exited with code -9"


def sweep_command(tiny_dir: Path, out: Path, toml: Path, *options: str) -> list[str]:
    """`vanishing sweep` on a TOML grid and the tiny data set (2 local workers by default)."""
    return [
        sys.executable,
        "-m",
        "vanishing",
        "sweep",
        "--config",
        str(toml),
        "--data-dir",
        str(tiny_dir),
        "--no-verify",
        "--out",
        str(out),
        *(options or ("--workers", "2")),
    ]


def test_kill_and_resume(tiny_dir, tmp_path):
    """SIGTERM a sweep mid-way; the rerun completes it, reruns nothing finished, leaves no half."""
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'activations = ["relu", "tanh", "sigmoid"]\ndepths = [1, 2]\nwidths = [8]\n'
        "seeds = [0, 1]\nepochs = 3\nbatch_size = 16\nprobe_every = 5\n"
        'probe_size = 32\ndevice = "cpu"\n'
    )
    out = tmp_path / "out"
    env = {**os.environ, "VANISHING_OFFLINE": "1"}
    process = subprocess.Popen(
        sweep_command(tiny_dir, out, toml),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*/result.json"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert 2 <= len(finished) < 12
    for name in finished:  # each finished run is whole: its last epoch row is there
        rows = records.read_metrics(out / name)
        assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2, 3]
    done = subprocess.run(
        sweep_command(tiny_dir, out, toml), env=env, text=True, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    results = list(out.glob("*/result.json"))
    assert len(results) == 12
    for name, mtime in finished.items():  # nothing finished ran twice
        assert (out / name / "result.json").stat().st_mtime_ns == mtime
    assert all(records.read_json(p)["status"] == "ok" for p in results)
    assert len(list(read_csv(out / "runs.csv"))) == 12


def test_a_sweep_killed_with_sigkill_leaves_no_worker_behind(tiny_dir, tmp_path):
    """Its children die with it: none keeps training (and holding run locks) as an orphan."""
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'activations = ["relu", "tanh"]\nhidden = [32, 16]\nseeds = [0, 1]\nepochs = 60\n'
        'batch_size = 32\nprobe_every = 3\nprobe_size = 32\ndevice = "cpu"\n'
    )
    out = tmp_path / "out"
    process = subprocess.Popen(
        sweep_command(tiny_dir, out, toml), env={**os.environ, "VANISHING_OFFLINE": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("*/" + records.CHECKPOINT)):
        time.sleep(0.005)
    process.kill()
    process.wait(timeout=60)
    time.sleep(0.5)  # an orphan would still be writing
    sizes = {p: p.stat().st_size for p in out.rglob("*") if p.is_file()}
    time.sleep(1.0)
    assert {p: p.stat().st_size for p in out.rglob("*") if p.is_file()} == sizes
    assert not list(out.glob("*/" + records.RESULT))  # killed before any run finished


def require(condition: bool, reason: str) -> None:
    """Skip when a test's tool is missing here; under CI (which installs it) fail instead."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def stop_namespace(ip: str, name: str) -> None:
    """Kill the processes of one network namespace (our Ray cluster only), then remove it.

    Not `ray stop`: that kills every Ray process on the machine, other users' clusters too.
    """
    listed = subprocess.run([ip, "netns", "pids", name], capture_output=True, text=True)
    pids = [int(p) for p in listed.stdout.split()]
    # Ray's GCS server and workers take over 10 s to heed SIGTERM: a second's grace, then KILL.
    for sig, grace in ((signal.SIGTERM, 1), (signal.SIGKILL, 10)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(map(running, pids)):
            time.sleep(0.1)
    subprocess.run([ip, "netns", "delete", name], capture_output=True)


def running(pid: int) -> bool:
    """Whether the process still runs: a zombie (dead, not yet reaped by a parent that may never
    reap it, as a daemon's is not) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def ray_env(temp: Path) -> dict[str, str]:
    """The environment of the test cluster and its driver: nothing of the user's Ray state.

    A fresh token (in token mode, Ray's default for new clusters) shared by the two, and a HOME
    and temporary directory of their own: Ray would otherwise read a token another cluster left
    in ~/.ray/auth_token, which this driver does not send, and write its sessions to /tmp/ray.
    """
    home = temp / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    return {
        **env,
        "HOME": str(home),
        "RAY_TMPDIR": str(temp),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


@pytest.fixture(scope="module")
def ray_netns():
    """A real Ray cluster (2 CPUs) in a network namespace of its own that has only loopback.

    Ray binds to a machine's outward address even when told 127.0.0.1; inside a namespace whose
    only interface is `lo` it has no other choice, so nothing leaves the loopback device.
    """
    require(importlib.util.find_spec("ray") is not None, "ray is not installed")
    ip = shutil.which("ip")
    require(ip is not None, "no `ip` command (iproute2)")
    ray_bin = str(Path(sys.executable).parent / "ray")
    name = f"vanishing-ray-{os.getpid()}"
    made = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True)
    require(made.returncode == 0, f"cannot make a network namespace: {made.stderr.strip()}")
    temp = Path(tempfile.mkdtemp(prefix="vray-"))  # short: Ray's socket paths stay < 108 bytes
    env = ray_env(temp)
    inside = [ip, "netns", "exec", name]
    try:
        subprocess.run([*inside, ip, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            [
                *inside,
                ray_bin,
                "start",
                "--head",
                "--num-cpus",
                "2",
                "--port",
                "6379",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--temp-dir",
                str(temp),
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=180,
        )
        yield inside, "127.0.0.1:6379", env
    finally:
        stop_namespace(ip, name)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.ray
def test_ray_backend_on_a_local_cluster(ray_netns, tiny_dir, tmp_path):
    inside, address, env = ray_netns
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'activations = ["relu", "sigmoid"]\ndepths = [1]\nwidths = [8]\n'
        "seeds = [0, 1]\nepochs = 1\nbatch_size = 32\nprobe_every = 5\n"
        'probe_size = 32\ndevice = "cpu"\n'
    )
    out = tmp_path / "ray"
    done = subprocess.run(
        [*inside, *sweep_command(tiny_dir, out, toml, "--backend", "ray", "--address", address)],
        env={**env, "VANISHING_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 ran now (4 ok, 0 diverged, 0 failed)" in done.stdout
    ray_rows = {r["run_dir"]: r for r in read_csv(out / "runs.csv")}
    # The same grid run locally, one thread per worker as on Ray: the same numbers.
    spec = grid.spec_from_dict(grid.read_toml(toml))
    local = swept(
        spec,
        tmp_path / "local",
        workers=2,
        data_options={"data_dir": str(tiny_dir), "verify": False},
    )
    assert sorted(ray_rows) == sorted(r["run_dir"] for r in local.rows)
    for row in local.rows:
        assert float(ray_rows[row["run_dir"]]["test_accuracy"]) == row["test_accuracy"]
    first = out / local.rows[0]["run_dir"]
    assert records.read_metrics(first)[0]["kind"] == "probe"
    assert records.read_json(first / "result.json")["run_dir"] == str(first)


def test_cli_preset_with_overrides(capsys, tiny_dir, tmp_path):
    from vanishing.frontends.cli import main

    out = tmp_path / "sw"
    argv = [
        "sweep",
        "--preset",
        "depth",
        "--activations",
        "relu,tanh",
        "--depths",
        "1,2",
        "--widths",
        "8",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--data-dir",
        str(tiny_dir),
        "--no-verify",
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    code = main(argv)
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "4 runs: 0 already done, 4 ran now (4 ok, 0 diverged, 0 failed)" in stdout
    rows = read_csv(out / "runs.csv")
    assert sorted((r["activation"], r["depth"]) for r in rows) == [
        ("relu", "1"),
        ("relu", "2"),
        ("tanh", "1"),
        ("tanh", "2"),
    ]
    assert "[4/4] " in stdout
    assert (out / "report.html").is_file()
    # The same command again runs nothing.
    main(argv)
    assert "4 runs: 4 already done, 0 ran now" in capsys.readouterr().out


@pytest.mark.parametrize(
    "options, message",
    [
        (["--preset", "nope"], "unknown preset 'nope'; choose from: adding, depth"),
        (["--preset", "depth", "--config", "x.toml"], "either --preset or --config"),
        (["--config", "missing.toml"], "missing.toml: file not found"),
        (["--config", "/dev/zero"], "/dev/zero: not a regular file; a sweep file is a TOML file"),
        (["--config", "."], ".: not a regular file; a sweep file is a TOML file"),
        (["--config", "/dev/null/grid.toml"], "/dev/null/grid.toml: cannot read (Not a directory)"),
        (["--depths", "2,x"], "command line: depths: expected int, got 'x'"),
        (["--activations", "relu,swish"], "unknown activation 'swish'"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_cli_bad_sweep_options(capsys, tmp_path, options, message):
    from vanishing.frontends.cli import main

    code = main(["sweep", "--out", str(tmp_path / "o"), *options])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vanishing sweep: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_a_resumed_sweep_of_older_records_is_one_point_per_grid_point(tiny_dir, tmp_path):
    """Runs whose records predate norm, residual, init_gain and clip_grad_norm, resumed by a
    sweep whose new runs record them at their defaults: each grid point is one row of
    points.csv with all its runs, as it is one point of the report."""
    spec = tiny_spec(activations=("relu", "tanh"), depths=(1,), seeds=(0, 1, 2))
    options = {"data_dir": tiny_dir, "verify": False}
    outcome = swept(spec, tmp_path, workers=1, data_options=options)
    added_later = ("norm", "residual", "init_gain", "clip_grad_norm")
    older = [tmp_path / naming.run_name(c) for c in outcome.configs if c.seed > 0]
    for run_dir in older:  # as an older version wrote them
        config = records.read_json(run_dir / records.CONFIG)
        assert config["norm"] == "none" and config["clip_grad_norm"] is None
        config = {k: v for k, v in config.items() if k not in added_later}
        records.write_json(run_dir / records.CONFIG, config)
        result = records.read_json(run_dir / records.RESULT)
        records.write_json(run_dir / records.RESULT, {**result, "config": config})

    again = swept(spec, tmp_path, workers=1, data_options=options)
    assert again.ran == 0 and again.skipped == 6  # the older runs are the grid's runs
    points = read_csv(tmp_path / "points.csv")
    assert [(p["activation"], p["runs"], p["ok"]) for p in points] == [
        ("relu", "3", "3"),
        ("tanh", "3", "3"),
    ]
    assert {(p["norm"], p["residual"], p["init_gain"], p["clip_grad_norm"]) for p in points} == {
        ("none", "False", "1.0", "")
    }
    rows = read_csv(tmp_path / "runs.csv")
    assert {row["norm"] for row in rows} == {"none"}  # older rows read as the defaults too
    (pair,) = read_csv(tmp_path / "pairs.csv")
    assert (pair["seeds"], pair["test"]) == ("3", "paired")

    built = report.build_report([tmp_path], figures=False)
    reported = {
        p.activation.name: (len(p.runs), row["test_accuracy_mean"])
        for p, row in zip(built.points, built.rows, strict=True)
    }
    assert len(reported) == len(points)
    for point in points:
        runs_of_point, accuracy = reported[point["activation"]]
        assert int(point["runs"]) == runs_of_point
        assert float(point["test_accuracy_mean"]) == pytest.approx(accuracy)


def test_the_recurrent_presets_train_tanh_rnn_irnn_and_gated_cells():
    recurrent = grid.expand(grid.load_preset("recurrent"))
    assert {(c.arch, c.activation, c.init) for c in recurrent} == {
        ("rnn", "tanh", "default"), ("rnn", "relu", "identity"), ("lstm", "tanh", "default"),
        ("gru", "tanh", "default"),
    }  # fmt: skip
    assert {c.sequence for c in recurrent} == {"rows", "pixels"}
    assert {(c.hidden, c.probe_size, c.train_size) for c in recurrent} == {((128,), 128, 2000)}
    adding = grid.expand(grid.load_preset("adding"))
    assert {(c.arch, c.length) for c in adding} == {
        (arch, length) for arch in ("rnn", "lstm", "gru") for length in (50, 100, 200)
    }
    assert {c.forget_bias for c in adding if c.arch == "lstm"} == {1.0}
    assert {c.dataset for c in adding} == {"adding"}
