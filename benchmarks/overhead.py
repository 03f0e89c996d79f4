"""B6: what the orchestrator costs per trial, beside the model work it orchestrates.

The quickstart search (digits-cnn) runs in this process, with MLflow tracking and sqlite storage as a user
gets them. The model work of every trial (pruning, recovery, quantization, evaluation, artifact saving
and latency measurement: ``Pipeline.prune``, ``compress`` and ``finish``, plus the baseline) is timed by
wrapping those methods; everything else in the run's wall time is orchestration: sampling, storage,
tracking, summaries, plots, start-up. Reported per trial and as a fraction of the run.

    python benchmarks/overhead.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _docs import measured, write_row, write_section  # benchmarks/ is on sys.path when a script runs
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.pipeline import Pipeline

SECTION = "## B6: orchestration overhead per trial (digits-cnn)"
POLICY = Path(__file__).resolve().parents[1] / "policies" / "quickstart.yaml"
MODEL_WORK = ("baseline", "prune", "compress", "finish")


def _timed(method: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    return wrapper


def one_run(trials: int) -> dict[str, float]:
    spent: list[float] = []
    originals = {name: getattr(Pipeline, name) for name in MODEL_WORK}
    for name, method in originals.items():
        setattr(Pipeline, name, _timed(method, spent))
    try:
        with tempfile.TemporaryDirectory() as runs:
            start = time.perf_counter()
            args = ["search", str(POLICY), "--budget", str(trials), "--runs-dir", runs, "--no-progress"]
            result = CliRunner().invoke(app, args)
            wall = time.perf_counter() - start
        if result.exit_code != 0:
            raise RuntimeError(result.output)
    finally:
        for name, method in originals.items():
            setattr(Pipeline, name, method)
    model = sum(spent)
    return {"wall": wall, "model": model, "overhead": wall - model, "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 trials, 1 repeat (CI smoke test)")
    parser.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = parser.parse_args()
    trials, repeats = (4, 1) if args.quick else (args.trials, args.repeats)
    runs = [one_run(trials) for _ in range(repeats)]
    lines = [
        "| run | trials | wall s | model work s | orchestration s | per trial s | fraction of the run |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs):
        lines.append(
            f"| {i + 1} | {trials} | {r['wall']:.1f} | {r['model']:.1f} | {r['overhead']:.1f} "
            f"| {r['overhead'] / trials:.2f} | **{r['overhead'] / r['wall']:.1%}** |"
        )
    fraction = statistics.median(r["overhead"] / r["wall"] for r in runs)
    quick = " --quick" if args.quick else f" --trials {trials} --repeats {repeats}"
    text = "\n".join(
        [
            SECTION,
            "",
            "`orchestrate search policies/quickstart.yaml` in-process (new sqlite study and MLflow store per "
            "run, latency measured in every trial); model work = time inside `Pipeline.baseline`, `prune`, "
            "`compress` and `finish`; orchestration = the rest of the wall time.",
            "",
            "\n".join(lines),
            "",
            f"Median fraction of the run spent orchestrating: **{fraction:.1%}**.",
            "",
            *measured("", f"benchmarks/overhead.py{quick}"),
        ]
    )
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        per_trial = sorted(r["overhead"] / trials for r in runs)
        write_row(
            args.write,
            "B6",
            "orchestration time (sampling, storage, tracking, summaries) / search time (digits-cnn)",
            f"median {fraction:.1%} of the run; {per_trial[0]:.2f}-{per_trial[-1]:.2f} s per trial",
            f"benchmarks/overhead.py{quick}",
        )


if __name__ == "__main__":
    main()
