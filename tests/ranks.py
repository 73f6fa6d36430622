"""A torch.distributed job of a few ranks for the tests: each rank a forked copy of the test
process (torch already imported: a second, not ten), joined by a TCPStore the test process
holds on a port the system chose (never a fixed one), as torchrun's agent holds its store."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def child(
    rank: int, world: int, port: int, log: Path, target: Callable[..., Any], args: Any
) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "TORCHELASTIC_USE_AGENT_STORE": "True",  # every rank a client of the test's store
        }
    )
    code = 0
    try:
        import torch

        torch.set_num_threads(1)
        target(*args)
    except BaseException:
        log.write_text(traceback.format_exc())
        code = 1
    os._exit(code)  # nothing of the test process's own runs at exit


def run_ranks(target: Callable[..., Any], *args: Any, world: int = 2, timeout: float = 120) -> None:
    """Run target(*args) on `world` ranks (env:// as torchrun sets it); a failed rank's
    traceback as the AssertionError."""
    import tempfile

    import torch
    from torch.distributed import TCPStore

    torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # its lazy imports, before the fork
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as folder:
        logs = [Path(folder) / f"rank{rank}.log" for rank in range(world)]
        processes = [
            context.Process(target=child, args=(rank, world, store.port, logs[rank], target, args))
            for rank in range(world)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout)
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        errors = [log.read_text() for log in logs if log.exists()]
        codes = [process.exitcode for process in processes]
    del store
    assert not errors and codes == [0] * world, f"exit codes {codes}\n" + "\n".join(errors)
