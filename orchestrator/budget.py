"""Search budgets: a number of trials (``50``) or wall time (``90s``, ``30m``, ``2h``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.errors import PolicyError

__all__ = ["Budget", "parse_budget"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_TRIALS = re.compile(r"^\s*(\d+)\s*$", re.ASCII)
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh])\s*$", re.ASCII)


@dataclass(frozen=True)
class Budget:
    """Either ``trials`` (counted over the whole study, across processes) or ``seconds`` of wall time."""

    trials: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.trials} trials" if self.trials is not None else f"{self.seconds:g}s"


def parse_budget(text: str | int) -> Budget:
    """``50`` → 50 trials; ``90s`` / ``30m`` / ``2h`` → wall time."""
    if isinstance(text, int) or _TRIALS.match(str(text)):
        trials = int(text)
        if trials < 1:
            raise PolicyError("a budget of trials must be at least 1", field="budget")
        return Budget(trials=trials)
    match = _TIME.match(str(text))
    if not match:
        raise PolicyError(
            f"budget {text!r} is neither a number of trials (50) nor a time (90s, 30m, 2h)",
            field="budget",
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise PolicyError("a time budget must be positive", field="budget")
    return Budget(seconds=seconds)
