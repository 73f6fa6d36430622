"""The process pool: results in order, messages in order, errors as themselves, nothing left."""

from __future__ import annotations

import os
import time

import pytest

from vanishing import pool
from vanishing.errors import DataError, UsageError
from vanishing.records import WriteError


def counting_job(n: int):
    def job(send):
        for i in range(3):
            send((n, i))
        return n * n, os.getpid()

    return job


def test_results_in_order_messages_in_order_and_children_are_other_processes():
    messages = []
    results = pool.run_jobs([counting_job(n) for n in range(5)], 2, messages.append)
    assert [r for r, _ in results] == [0, 1, 4, 9, 16]
    assert all(pid != os.getpid() for _, pid in results)
    real = [m for m in messages if m is not None]
    assert sorted(real) == [(n, i) for n in range(5) for i in range(3)]
    for n in range(5):  # each job's own messages arrive in the order it sent them
        assert [i for m, i in real if m == n] == [0, 1, 2]


def test_one_worker_runs_in_this_process_without_a_pipe():
    def job(send):
        assert send is None
        return os.getpid()

    assert pool.run_jobs([job, job], 1, lambda m: None) == [os.getpid()] * 2


@pytest.mark.parametrize(
    "error",
    [UsageError("unknown activation 'x'"), DataError("mnist: no source"),
     WriteError(28, "cannot write /x/metrics.jsonl: No space left on device")],
    ids=["usage", "data", "write"],
)  # fmt: skip
def test_our_errors_come_back_as_themselves(error):
    def bad(send):
        raise error

    with pytest.raises(type(error)) as caught:
        pool.run_jobs([counting_job(1), bad], 2, lambda m: None)
    assert str(caught.value) == str(error) and caught.value.args == error.args
    if isinstance(error, WriteError):  # what the CLI prints
        assert caught.value.strerror == error.strerror and caught.value.errno == 28


def test_an_unexpected_error_comes_back_with_the_child_traceback():
    def bad(send):
        return {}["missing"]

    with pytest.raises(pool.ChildError, match=r"(?s)Traceback.*KeyError: 'missing'"):
        pool.run_jobs([bad, counting_job(1)], 2, lambda m: None)


def test_a_child_that_dies_is_an_error_not_a_hang():
    def dies(send):
        os._exit(9)

    start = time.monotonic()
    with pytest.raises(pool.ChildError, match="exited with code 9"):
        pool.run_jobs([dies, counting_job(1)], 2, lambda m: None)
    assert time.monotonic() - start < 30


def test_a_callback_that_stops_the_pool_kills_every_child(tmp_path):
    def sleeper(n):
        def job(send):
            (tmp_path / f"pid{n}").write_text(str(os.getpid()))
            send("started")
            time.sleep(300)

        return job

    started = []

    def on_message(message):
        if message == "started":
            started.append(1)
        if len(started) == 2:
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.run_jobs([sleeper(0), sleeper(1), sleeper(2)], 2, on_message)
    assert time.monotonic() - start < 60
    pids = [int((tmp_path / f"pid{n}").read_text()) for n in range(2)]
    assert not (tmp_path / "pid2").exists()  # never started
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_children_share_the_cores_out(monkeypatch):
    import torch

    def job(send):
        return torch.get_num_threads()

    monkeypatch.setattr(pool, "default_workers", lambda: 6)
    assert pool.run_jobs([job] * 3, 2, lambda m: None) == [3, 3, 3]  # 6 cores, 2 at once
    assert pool.run_jobs([job] * 2, 4, lambda m: None) == [3, 3]  # only 2 jobs: 2 at once
    assert pool.run_jobs([job] * 2, 2, lambda m: None, threads=1) == [1, 1]


def test_children_start_with_the_lazy_imports_done():
    """A fresh process: without the warm-up each child would import torch._dynamo itself."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from vanishing import pool\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "def job(send):\n"
        "    return 'torch._dynamo' in sys.modules\n"
        "print(pool.run_jobs([job, job], 2, lambda m: None))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=99)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[True, True]"
