"""The ``orchestrate`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from collections.abc import Iterator

app = typer.Typer(
    name="orchestrate",
    help="Search and apply per-layer pruning + quantization plans for PyTorch models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _State:
    block: tuple[str, ...] = ()


#: options shared by the commands that read a study
StudyOption = Annotated[str, typer.Option(help="Study name.")]
StorageOption = Annotated[
    str | None, typer.Option(help="Optuna storage URL (default: sqlite in the runs directory).")
]
RunsDirOption = Annotated[Path, typer.Option(help="Where studies, summaries and plans go.")]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn library errors into a one-line message and the error's exit code (2 for bad input)."""
    try:
        yield
    except OrchestratorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _registry() -> Any:
    from orchestrator.registry import load_registry

    return load_registry(block=_State.block)


@app.callback()
def main(
    block: Annotated[
        list[str] | None,
        typer.Option(
            "--block",
            help="Do not load the plugin of this name (repeatable; also ORCHESTRATOR_BLOCK=a,b).",
        ),
    ] = None,
    trust_model_files: Annotated[
        bool,
        typer.Option(
            "--trust-model-files",
            help="Load model files that need full unpickling (a whole pickled model), which runs code "
            "from them: only for files from a source you trust (also ORCHESTRATOR_TRUST_MODEL_FILES=1).",
        ),
    ] = False,
) -> None:
    from orchestrator.model_files import trust_model_files as trust

    _State.block = tuple(block or ())
    trust(True if trust_model_files else None)  # without the flag, the environment decides


@app.command()
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the components the installed plugins provide."""
    with _user_errors():
        rows = [info.as_dict() for info in _registry().components.infos()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "name", "distribution", "version", "summary")
    for row in rows:
        table.add_row(row["kind"], row["name"], row["distribution"], row["version"], row["summary"])
    Console().print(table)


@app.command()
def validate(policy: Annotated[Path, typer.Argument(help="Policy or plan file.")]) -> None:
    """Check a policy: schema, components and their options, and the steps its plan or search asks for."""
    from orchestrator.policy import load_policy

    with _user_errors():
        loaded = load_policy(policy)
        loaded.check_components(_registry().components)
    typer.echo(f"{policy}: ok")


@app.command()
def schema() -> None:
    """Print the JSON schema of policy files."""
    from orchestrator.policy import policy_json_schema

    typer.echo(json.dumps(policy_json_schema(), indent=2))


@app.command()
def apply(
    policy_or_plan: Annotated[
        Path,
        typer.Argument(
            help="A policy with a 'plan:' (e.g. a saved trial plan), or a bare plan with --policy."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for plan, model and metrics.")],
    policy: Annotated[
        Path | None,
        typer.Option(help="Policy giving task and pipeline when the file is a bare plan (layers only)."),
    ] = None,
) -> None:
    """Apply a fixed plan: write DIR/plan.yaml, DIR/model.pt and DIR/metrics.json."""
    from orchestrator.errors import PolicyError
    from orchestrator.pipeline import apply_policy
    from orchestrator.policy import is_bare_plan, load_plan, load_policy

    with _user_errors():
        if is_bare_plan(policy_or_plan):
            if policy is None:
                raise PolicyError(
                    "this is a bare plan (layers only); pass --policy POLICY for its task and pipeline",
                    path=policy_or_plan,
                )
            loaded = load_policy(policy).with_plan(load_plan(policy_or_plan))
        else:
            loaded = load_policy(policy_or_plan)
        report = apply_policy(loaded, _registry(), out)
    _print_comparison(report)
    typer.echo(f"wrote {out / 'plan.yaml'}, {out / 'model.pt'}, {out / 'metrics.json'}")


@app.command()
def search(
    policy: Annotated[Path, typer.Argument(help="Policy with a 'search:' section.")],
    budget: Annotated[
        str | None,
        typer.Option(help="Trials for the whole study (50) or wall time for this run (90s, 30m, 2h)."),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the policy file's name).")] = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("orchestrate-runs"),
    seed: Annotated[int | None, typer.Option(help="Sampler seed (default: the policy's seed).")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: sqlite in the runs directory).")
    ] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Record runs in MLflow.")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    heartbeat: Annotated[
        int,
        typer.Option(
            min=0,
            help="Seconds between heartbeats of a running trial; a trial silent for 3 of them is failed "
            "(its worker died) by the next worker to start a trial. 0 turns this off.",
        ),
    ] = 10,
    retries: Annotated[
        int, typer.Option(min=0, help="How often the plan of a trial whose worker died is run again.")
    ] = 1,
) -> None:
    """Search per-layer pruning ratios and bit-widths; resumes the study if it exists.

    Start the same command on several machines with a shared --storage (PostgreSQL) to share one study
    and one budget. Exits with 1 when every trial failed.
    """
    import os

    from orchestrator.policy import load_policy

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # keep MLflow's set-up chatter out
    from orchestrator.search import SearchSettings, run_search

    with _user_errors():
        loaded = load_policy(policy)
        registry = _registry()
        loaded.check_components(registry.components)
        settings = SearchSettings.resolve(
            loaded,
            budget=budget,
            study=study,
            storage=storage,
            runs_dir=runs_dir,
            seed=seed,
            tracking_uri=tracking_uri,
            track=track,
            progress=progress,
            heartbeat=heartbeat,
            retries=retries,
        )
        summary = run_search(loaded, registry, settings)
    _print_summary(summary, settings.runs_dir / settings.study)
    if summary["counts"].get("lost"):
        typer.echo(
            f"{summary['counts']['lost']} trial(s) lost with their worker (killed or interrupted) "
            "are not counted in the budget"
        )
    if summary.get("interrupted"):
        typer.echo("interrupted: run the same command again to resume", err=True)
        raise typer.Exit(130)
    counts = summary["counts"]
    if counts["finished"] and counts["failed"] == counts["finished"]:
        errors = [t["error"] for t in summary["trials"] if t["state"] == "failed" and t.get("error")]
        last = errors[-1].strip().splitlines()[-1] if errors else "no error recorded"
        typer.echo(f"error: every trial failed ({counts['failed']}); the last one with: {last}", err=True)
        raise typer.Exit(1)


def _load_study(study: str, storage: str | None, runs_dir: Path) -> Any:
    """The stored study named ``study``; an error naming the studies the storage holds if absent."""
    import optuna

    from orchestrator.storage import default_storage_url, open_storage

    url = storage or default_storage_url(runs_dir.resolve())
    try:
        return optuna.load_study(study_name=study, storage=open_storage(url))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(url))]
        raise OrchestratorError(
            f"no study '{study}' in {url}; studies there: {', '.join(names) or 'none'}"
        ) from None


@app.command()
def report(
    study: StudyOption,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("orchestrate-runs"),
) -> None:
    """Redraw summary.json, Pareto plans and plots of a study from its storage."""
    from orchestrator.summary import write_outputs

    with _user_errors():
        loaded = _load_study(study, storage, runs_dir)
        out = runs_dir.resolve() / study
        summary = write_outputs(loaded, out)
    _print_summary(summary, out)


@app.command()
def finalize(
    study: StudyOption,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("orchestrate-runs"),
) -> None:
    """Re-train the study's Pareto plans with search.finalize's long recovery budget and record them."""
    from orchestrator.finalize import finalize_study
    from orchestrator.policy import parse_policy
    from orchestrator.tracking import default_tracking_uri

    with _user_errors():
        root = runs_dir.resolve()
        loaded = _load_study(study, storage, root)
        policy = parse_policy(loaded.user_attrs["policy"])
        tracking = policy.search.tracking if policy.search else None
        uri = None
        if tracking is not None and tracking.enabled:
            uri = tracking.uri or default_tracking_uri(root)
        results = finalize_study(loaded, _registry(), root / study, tracking_uri=uri)
    metric = loaded.user_attrs.get("metric", "metric")
    for row in results:
        before, after = row["search"].get(metric), row["final"].get(metric)
        typer.echo(f"trial {row['number']}: {metric} {before:.4g} after search -> {after:.4g} after finalize")
    typer.echo(f"updated {root / study / 'summary.json'}; artifacts in {root / study / 'final'}")


def _trial_policy(trial: int, study: str | None, storage: str | None, runs_dir: Path) -> Any:
    """The policy of ``study`` with the plan of its trial number ``trial``."""
    from orchestrator.errors import PolicyError
    from orchestrator.plan import CompressionPlan
    from orchestrator.policy import parse_policy

    if study is None:
        raise PolicyError(
            f"'{trial}' is a trial number: pass --study NAME (and --storage if not the default)"
        )
    loaded = _load_study(study, storage, runs_dir)
    trials = {t.number: t for t in loaded.get_trials(deepcopy=False)}
    if trial not in trials or "plan" not in trials[trial].user_attrs:
        raise OrchestratorError(
            f"study '{study}' has no trial {trial} with a plan (it has {len(trials)} trials)"
        )
    plan = CompressionPlan.from_mapping(trials[trial].user_attrs["plan"])
    return parse_policy(loaded.user_attrs["policy"]).with_plan(plan)


@app.command()
def export(
    plan_or_trial: Annotated[
        str,
        typer.Argument(
            help="A policy with a 'plan:' (e.g. plans/trial-0007.yaml), a bare plan with --policy, "
            "or a trial number with --study."
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="pt2, torchscript, onnx or state_dict.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    policy: Annotated[Path | None, typer.Option(help="Policy for a bare plan.")] = None,
    study: Annotated[str | None, typer.Option(help="Study holding the trial.")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL of the study.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where studies are kept.")] = Path("orchestrate-runs"),
) -> None:
    """Apply a plan (pruning, recovery, quantization) and write the model in a deployable format.

    The file is loaded back and run on example inputs; the largest output difference is printed.
    """
    import tempfile

    from orchestrator.errors import PolicyError
    from orchestrator.export import FORMATS, export_model, load_exported, max_difference
    from orchestrator.pipeline import Pipeline
    from orchestrator.policy import is_bare_plan, load_plan, load_policy

    with _user_errors():
        if fmt not in FORMATS:
            raise PolicyError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}")
        source = Path(plan_or_trial)
        if source.exists():
            if is_bare_plan(source):
                if policy is None:
                    raise PolicyError("this is a bare plan; pass --policy POLICY", path=source)
                loaded = load_policy(policy).with_plan(load_plan(source))
            else:
                loaded = load_policy(source)
        elif plan_or_trial.removeprefix("trial-").isdigit():
            loaded = _trial_policy(int(plan_or_trial.removeprefix("trial-")), study, storage, runs_dir)
        else:
            raise PolicyError(f"'{plan_or_trial}' is neither a file nor a trial number")
        if loaded.plan is None:
            raise loaded.error("this policy has no 'plan:' to export", ("plan",))
        registry = _registry()
        pipeline = Pipeline.from_policy(loaded, registry)
        with tempfile.TemporaryDirectory() as tmp:
            baseline = pipeline.baseline(Path(tmp))
            model = pipeline.compress(loaded.plan, baseline).model
        example = pipeline.task.example_inputs(2)
        export_model(model, example, fmt, out, policy=loaded)  # type: ignore[arg-type]
        import torch

        reloaded = load_exported(out, registry, trusted=True)  # the file it has just written
        with torch.no_grad():
            difference = max_difference(reloaded(*example), model(*example))
    typer.echo(
        f"wrote {out} ({fmt}, {out.stat().st_size:,} bytes); reloaded: max |output difference| "
        f"{difference:.3g}"
    )


@app.command()
def score(
    policy: Annotated[Path, typer.Argument(help="Policy naming the task (and maybe a scorer).")],
    scorer: Annotated[
        str | None, typer.Option(help="Scorer to use (default: the policy's pipeline.scorer).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a bar chart of the scores (PNG).")] = None,
) -> None:
    """Score every layer (or droppable block) of the task's model: importance, params, MACs, rank."""
    from orchestrator.policy import load_policy
    from orchestrator.scoring import score_model, write_score_plot

    with _user_errors():
        loaded = load_policy(policy)
        _scores, rows = score_model(loaded, _registry(), scorer)
    name = scorer or (loaded.pipeline.scorer.name if loaded.pipeline.scorer else "")
    if not rows:
        typer.echo(f"{name} found nothing to score in the model of {loaded.task.name}", err=True)
    if plot is not None:
        write_score_plot(rows, plot, title=f"{name} scores of {loaded.task.name}")
    if as_json:
        typer.echo(json.dumps({"scorer": name, "task": loaded.task.name, "layers": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("layer", "type", "params", "MACs", "score", "rank", title=f"{name} on {loaded.task.name}")
    for row in rows:
        table.add_row(
            row["layer"],
            row["type"],
            f"{row['params']:,}",
            f"{row['macs']:,}",
            f"{row['score']:.4g}",
            str(row["rank"]),
        )
    Console(file=sys.stdout).print(table)
    if plot is not None:
        typer.echo(f"wrote {plot}")


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from rich.console import Console

    from orchestrator.report import pareto_table

    console = Console(file=sys.stdout)
    console.print(pareto_table(summary))
    counts = summary["counts"]
    console.print(
        f"{counts['finished']} trials: {counts['complete']} complete, {counts['infeasible']} infeasible, "
        f"{counts['gated']} gated, {counts['failed']} failed. Summary: {out / 'summary.json'}"
    )


def _print_comparison(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    base, comp = report["baseline"], report["compressed"]
    table = Table("metric", "baseline", "compressed", "ratio")
    keys = [report["metric"], "params", "macs", "size_bytes"]
    keys += sorted(k for k in comp if k.startswith("latency_ms"))
    for key in keys:
        b, c = base.get(key), comp.get(key)
        ratio = f"{c / b:.3f}" if b and c is not None and key != report["metric"] else ""
        table.add_row(key, _fmt(b), _fmt(c), ratio)
    Console(file=sys.stdout).print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return "" if value is None else f"{int(value):,}" if isinstance(value, int | float) else str(value)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()
