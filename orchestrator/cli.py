"""The ``orchestrate`` command line: a thin layer over the library."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

app = typer.Typer(
    name="orchestrate",
    help="Search and apply per-layer pruning + quantization plans for PyTorch models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _State:
    block: tuple[str, ...] = ()


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
) -> None:
    _State.block = tuple(block or ())


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
    """Check a policy: schema, component names and their options."""
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
    policy: Annotated[Path, typer.Argument(help="A policy with a 'plan:' (e.g. a saved trial plan).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for plan, model and metrics.")],
) -> None:
    """Apply a fixed plan: write DIR/plan.yaml, DIR/model.pt and DIR/metrics.json."""
    from orchestrator.pipeline import apply_policy
    from orchestrator.policy import load_policy

    with _user_errors():
        loaded = load_policy(policy)
        report = apply_policy(loaded, _registry(), out)
    _print_comparison(report)
    typer.echo(f"wrote {out / 'plan.yaml'}, {out / 'model.pt'}, {out / 'metrics.json'}")


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
