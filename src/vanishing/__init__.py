"""vanishing: see and measure the vanishing-gradient problem in MLPs on MNIST.

From Python: `vanishing.train`, `compare`, `sweep` and `report` run the commands of the same names
(`frontends.api`); `vanishing.watch(model, optimizer)` measures your own network as it trains
(`measure.watch`).
They are imported on first use, so that `import vanishing` loads neither torch nor matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The names of the Python API, and the module each lives in.
EXPORTS = {
    "train": "frontends.api",
    "compare": "frontends.api",
    "sweep": "frontends.api",
    "report": "frontends.api",
    "Comparison": "frontends.api",
    "watch": "measure.watch",
}


def __getattr__(name: str) -> Any:
    """`vanishing.NAME` for the names in EXPORTS, imported from their module on first use."""
    if name in EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])
