"""How many trials each search method needs to reach a target plan.

Target: at most 1 point below the baseline's accuracy at <= 10 % of the baseline's MACs. Methods:
random sampling, plain TPE, score-shaped TPE (ratio ranges narrowed by a scorer) and score-shaped TPE
with its score-derived warm starts. Every method starts with the same enqueued reference plans
(unchanged, all-int8, uniform float, uniform int8) and every trial counts, enqueued ones included; the
warm starts of the last method count too. Median over seeds; a run that misses the target within
--max-trials counts as max-trials + 1 (shown as ">N").

    python benchmarks/search_efficiency.py --seeds 5 --max-trials 30 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _docs import write_section  # benchmarks/ is on sys.path when a script runs

from orchestrator import load_registry, parse_policy
from orchestrator.events import TrialFinished
from orchestrator.search import Search, SearchSettings

POLICY = Path(__file__).resolve().parents[1] / "policies" / "quickstart.yaml"
SECTION = "## Search efficiency (digits-cnn)"


def _policy(method: str, scorer: str, epochs: float, strength: float) -> Any:
    data = yaml.safe_load(POLICY.read_text())
    data["pipeline"]["distiller"]["options"]["epochs"] = epochs
    search = data["search"]
    search["constraints"] = {"max_accuracy_drop": 1.0}
    search["sampler"] = "random" if method == "random" else "tpe"
    if method.startswith("shaped"):
        search["priors"] = {
            "scorer": scorer,
            "strength": strength,
            "warm_starts": 3 if method == "shaped+warm" else 0,
        }
    return parse_policy(yaml.safe_dump(data), path=POLICY)


def _hits(event: TrialFinished, baseline: dict[str, float]) -> bool:
    m = event.metrics
    return (
        event.state == "complete"
        and m.get("accuracy", -1.0) >= baseline["accuracy"] - 1.0
        and m.get("macs", float("inf")) <= 0.10 * baseline["macs"]
    )


def trials_to_target(
    method: str, seed: int, max_trials: int, scorer: str, epochs: float, strength: float
) -> tuple[int | None, bool]:
    """(trials used when the target was first met or None, whether the uniform reference met it)."""
    policy = _policy(method, scorer, epochs, strength)
    registry = load_registry()
    with tempfile.TemporaryDirectory() as tmp:
        settings = SearchSettings.resolve(
            policy,
            budget=str(max_trials),
            study=f"{method}-{seed}",
            runs_dir=Path(tmp),
            seed=seed,
            track=False,
            progress=False,
        )
        search = Search(policy, registry, settings)
        found: list[int] = []
        uniform_hit: list[bool] = []

        def stop(event: TrialFinished) -> bool:
            assert search.baseline is not None
            if event.number == 2:  # the uniform float reference plan
                uniform_hit.append(_hits(event, search.baseline.metrics))
            if _hits(event, search.baseline.metrics):
                found.append(event.number + 1)
                return True
            return False

        search.run(stop=stop)
    return (found[0] if found else None), bool(uniform_hit and uniform_hit[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-trials", type=int, default=30)
    parser.add_argument("--scorer", default="sensitivity")
    parser.add_argument("--epochs", type=float, default=6.0, help="kd recovery epochs per trial")
    parser.add_argument("--strength", type=float, default=0.5, help="priors strength (score-shaped)")
    parser.add_argument("--methods", default="random,tpe,shaped,shaped+warm")
    parser.add_argument("--write", type=Path, help="replace this benchmark's section in a markdown file")
    args = parser.parse_args()
    methods = args.methods.split(",")
    results: dict[str, list[int | None]] = {m: [] for m in methods}
    uniform_met = False
    start = time.time()
    for seed in range(args.seeds):
        for method in methods:
            used, uniform = trials_to_target(
                method, seed, args.max_trials, args.scorer, args.epochs, args.strength
            )
            uniform_met |= uniform
            results[method].append(used)
            shown = used if used else f">{args.max_trials}"
            print(f"seed {seed} {method:12s} trials to target: {shown}", flush=True)
    table = _table(results, args, uniform_met, time.time() - start)
    print(table)
    if args.write:
        write_section(args.write, SECTION, table)


def _fmt(values: list[int | None], cap: int) -> tuple[str, str, str]:
    counted = [v if v is not None else cap + 1 for v in values]
    med = statistics.median(counted)
    median = f">{cap}" if med > cap else f"{med:g}"
    hits = sum(v is not None for v in values)
    runs = ", ".join(str(v) if v is not None else f">{cap}" for v in values)
    return median, f"{hits}/{len(values)}", runs


def _table(
    results: dict[str, list[int | None]], args: argparse.Namespace, uniform: bool, seconds: float
) -> str:
    names = {
        "random": "random",
        "tpe": "TPE (multivariate)",
        "shaped": f"score-shaped TPE ({args.scorer} priors, strength {args.strength:g})",
        "shaped+warm": f"score-shaped TPE + 3 warm starts ({args.scorer}, strength {args.strength:g})",
    }
    lines = [
        SECTION,
        "",
        "Trials needed to reach a plan at most 1 point below the baseline's accuracy at <= 10 % of its MACs",
        f"(digits-cnn, quickstart space, {args.epochs:g} epochs of kd recovery per trial,",
        f"{args.seeds} seeds, at most {args.max_trials} trials;",
        "every trial counted, the 4 enqueued reference plans included).",
        "",
        "| method | median trials to target | runs that reached it | per seed |",
        "|---|---|---|---|",
    ]
    for method, values in results.items():
        median, hits, runs = _fmt(values, args.max_trials)
        lines.append(f"| {names.get(method, method)} | {median} | {hits} | {runs} |")
    load = os.getloadavg()[0]
    lines += [
        "",
        f"The uniform reference plan {'MET' if uniform else 'did not meet'} the target on its own.",
        f"Measured {datetime.date.today().isoformat()} on 2 CPU cores in {seconds / 60:.0f} min "
        f"(load average at the end {load:.2f}). Reproduce with:",
        "",
        "```bash",
        f"python benchmarks/search_efficiency.py --seeds {args.seeds} --max-trials {args.max_trials} "
        f"--epochs {args.epochs:g} --scorer {args.scorer} --strength {args.strength:g} "
        f"--methods {','.join(results)} --write docs/benchmarks.md",
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
