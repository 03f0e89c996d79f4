"""`orchestrate search` on the bundled digits task, run as a user runs it."""

from __future__ import annotations

import datetime
import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from orchestrator import Distiller, hookimpl, load_policy, load_registry
from orchestrator.cli import app
from orchestrator.search import SearchSettings, run_search
from orchestrator.tracking import read_trial_runs

from .conftest import POLICIES

QUICKSTART = POLICIES / "quickstart.yaml"


def _search(runs: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["search", str(QUICKSTART), "--runs-dir", str(runs), "--no-progress", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads((runs / "quickstart" / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def first(runs: Path) -> dict[str, Any]:
    return _search(runs, "--budget", "12")


def test_search_finds_a_small_accurate_plan(first: dict[str, Any]) -> None:
    counts = first["counts"]
    assert counts["finished"] == 12
    assert counts["complete"] + counts["failed"] + counts["infeasible"] + counts["gated"] == 12
    base = first["baseline"]
    assert first["pareto"]
    good = [
        t
        for t in first["pareto"]
        if t["metrics"]["macs"] <= 0.5 * base["macs"] and t["metrics"]["accuracy"] >= base["accuracy"] - 1.5
    ]
    assert good, first["pareto"]
    tried = [t["layers"] for t in first["trials"] if t["state"] != "failed"]
    pruned_only = [
        p
        for p in tried
        if any(d.get("prune_ratio") for d in p.values()) and not any(d.get("bits") for d in p.values())
    ]
    pruned_and_quantized = [
        p
        for p in tried
        if any(d.get("prune_ratio") for d in p.values()) and any(d.get("bits") == 8 for d in p.values())
    ]
    assert pruned_only
    assert pruned_and_quantized


def test_outputs_are_written(first: dict[str, Any], runs: Path) -> None:
    out = runs / "quickstart"
    assert (out / "pareto.html").stat().st_size > 0
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    for trial in first["pareto"]:
        assert Path(trial["plan"]).exists()
        assert Path(trial["plan"]).name == f"trial-{trial['number']:04d}.yaml"


def test_mlflow_holds_one_parent_and_a_child_per_trial(first: dict[str, Any], runs: Path) -> None:
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    children = read_trial_runs(uri, "quickstart")
    assert len(children) == 12
    assert len({c["parent_run_id"] for c in children}) == 1
    with_layers = [c for c in children if any(k.endswith(".prune_ratio") for k in c["params"])]
    assert with_layers


def test_the_search_records_the_software_and_machine_it_measured_with(
    first: dict[str, Any], runs: Path
) -> None:
    import torch
    from mlflow import MlflowClient

    expected = {"torch": torch.__version__, "torch-pruning": version("torch-pruning")}
    assert expected.items() <= first["environment"].items()
    assert first["environment"]["cpu_count"] == str(os.cpu_count())
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    (parent,) = {c["parent_run_id"] for c in read_trial_runs(client.tracking_uri, "quickstart")}
    params = client.get_run(parent).data.params
    assert {f"env.{k}": v for k, v in expected.items()}.items() <= params.items()


def test_pareto_plan_reapplies_with_the_same_macs(first: dict[str, Any], tmp_path: Path) -> None:
    trial = min(first["pareto"], key=lambda t: t["metrics"]["macs"])
    result = CliRunner().invoke(app, ["apply", trial["plan"], "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    applied = json.loads((tmp_path / "metrics.json").read_text())["compressed"]
    assert applied["macs"] == trial["metrics"]["macs"]
    assert applied["accuracy"] == pytest.approx(trial["metrics"]["accuracy"], abs=0.5)


def test_a_trial_exports_by_its_number_from_storage(
    first: dict[str, Any], runs: Path, tmp_path: Path
) -> None:
    float_trials = [
        t["number"]
        for t in first["trials"]
        if t["state"] == "complete" and not any(d.get("bits") for d in t["layers"].values())
    ]
    assert float_trials
    out = tmp_path / "model.pt2"
    args = ["export", str(float_trials[0]), "--study", "quickstart", "--runs-dir", str(runs)]
    result = CliRunner().invoke(app, [*args, "--format", "pt2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "reloaded: max |output difference| 0" in result.output
    assert out.stat().st_size > 0


def test_finalize_retrains_the_pareto_plans_and_records_them_everywhere(
    first: dict[str, Any], runs: Path
) -> None:
    result = CliRunner().invoke(app, ["finalize", "--study", "quickstart", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    summary = json.loads((runs / "quickstart" / "summary.json").read_text())
    pareto = summary["pareto"]
    assert pareto
    for row in pareto:
        final = row["final"]
        assert {"accuracy", "macs", "size_bytes", "macs_ratio"} <= final.keys()
        assert final["macs"] == row["metrics"]["macs"]  # the same plan, trained longer
        assert (runs / "quickstart" / "final" / f"trial-{row['number']:04d}" / "model.pt").exists()
        assert f"trial {row['number']}: accuracy" in result.output
    children = {
        r["trial_number"]: r for r in read_trial_runs(f"sqlite:///{runs / 'mlflow.db'}", "quickstart")
    }
    for row in pareto:
        assert children[row["number"]]["metrics"]["final_accuracy"] == pytest.approx(row["final"]["accuracy"])


def test_finalize_refuses_a_different_baseline(tmp_path: Path) -> None:
    import optuna

    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app, ["search", str(QUICKSTART), "--runs-dir", str(runs), "--no-progress", "--budget", "1"]
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{runs / 'optuna.db'}")
    study.set_user_attr("baseline", {**study.user_attrs["baseline"], "accuracy": 50.0})
    result = CliRunner().invoke(app, ["finalize", "--study", "quickstart", "--runs-dir", str(runs)])
    assert result.exit_code == 1
    assert "searched against 50" in result.output
    assert "ORCHESTRATOR_CACHE" in result.output


def test_rerun_with_a_larger_budget_adds_exactly_the_difference(first: dict[str, Any], runs: Path) -> None:
    again = _search(runs, "--budget", "16")
    assert again["counts"]["finished"] == 16
    numbers = [t["number"] for t in again["trials"]]
    assert numbers == list(range(16))
    # the first 12 trials are kept as they were
    before = {t["number"]: t["metrics"] for t in first["trials"]}
    assert all(again["trials"][n]["metrics"] == before[n] for n in before)
    children = read_trial_runs(f"sqlite:///{runs / 'mlflow.db'}", "quickstart")
    assert len(children) == 16


def test_report_redraws_from_storage(first: dict[str, Any], runs: Path) -> None:
    out = runs / "quickstart"
    (out / "summary.json").unlink()
    (out / "pareto.png").unlink()
    result = CliRunner().invoke(app, ["report", "--study", "quickstart", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["counts"]["finished"] >= 12
    assert (out / "pareto.png").exists()
    assert "Pareto" in result.output


def test_time_budget_starts_no_trial_after_the_deadline(tmp_path: Path) -> None:
    before = datetime.datetime.now()
    result = CliRunner().invoke(
        app,
        [
            "search",
            str(QUICKSTART),
            "--runs-dir",
            str(tmp_path),
            "--budget",
            "8s",
            "--study",
            "timed",
            "--no-progress",
            "--no-track",
        ],
    )
    assert result.exit_code == 0, result.output
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = optuna.load_study(study_name="timed", storage=storage).trials
    assert trials
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    # the baseline is built before the clock starts; every trial started within 8 s of it
    assert max(starts) - min(starts) <= datetime.timedelta(seconds=8)
    assert min(starts) >= before


def _custom_policy(tmp_path: Path, extra: str = "", distiller: str = "kd") -> Path:
    text = QUICKSTART.read_text().replace("name: kd", f"name: {distiller}", 1)
    text = text.replace("  sampler: tpe\n", f"  sampler: random\n{extra}")
    text = text.replace("options: {epochs: 3, temperature: 4.0, alpha: 0.7, lr: 0.002}", "options: {}")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_plan_only_constraints_reject_plans_before_training(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(QUICKSTART.read_text().replace("max_accuracy_drop: 1.5", "max_macs_ratio: 0.02"))
    policy = load_policy(path)
    settings = SearchSettings.resolve(policy, budget="4", runs_dir=tmp_path, track=False, progress=False)
    summary = run_search(policy, load_registry(), settings)
    assert summary["counts"]["infeasible"] == 4
    for trial in summary["trials"]:
        assert "accuracy" not in trial["metrics"]  # never trained nor evaluated
        assert trial["constraints"]["max_macs_ratio"] > 0


class _Exploding(Distiller):  # type: ignore[type-arg]
    name = "exploding"

    def distill(self, student, teacher, task, *, monitor=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("plugin bug")


class _ExplodingPlugin:
    @hookimpl
    def orchestrator_register(self, registry):  # type: ignore[no-untyped-def]
        registry.register(_Exploding)


def test_a_plugin_that_raises_fails_its_trial_not_the_study(tmp_path: Path) -> None:
    policy = load_policy(_custom_policy(tmp_path, distiller="exploding"))
    registry = load_registry(plugins=[("exploding", _ExplodingPlugin())])
    settings = SearchSettings.resolve(policy, budget="5", runs_dir=tmp_path, progress=False)
    summary = run_search(policy, registry, settings)
    counts = summary["counts"]
    assert counts["finished"] == 5
    # the unchanged and int8-only reference plans need no recovery and complete
    assert counts["complete"] >= 2
    assert counts["failed"] >= 1
    failed = [t for t in summary["trials"] if t["state"] == "failed"]
    assert all("plugin bug" in t["error"] for t in failed)
    runs = read_trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "policy")
    assert any(
        r["status"] == "FAILED" and "plugin bug" in r["tags"].get("orchestrator.error", "") for r in runs
    )


def test_hopeless_trials_are_gated_during_recovery(tmp_path: Path) -> None:
    text = QUICKSTART.read_text().replace("max_accuracy_drop: 1.5", "max_accuracy_drop: 0.0")
    text = text.replace("prune_ratio: [0.0, 0.85]", "prune_ratio: [0.9, 0.95]")
    text = text.replace(
        "  sampler: tpe\n", "  sampler: random\n  reference_plans: false\n  gate: {margin: 0.0}\n"
    )
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    policy = load_policy(path)
    settings = SearchSettings.resolve(policy, budget="2", runs_dir=tmp_path, track=False, progress=False)
    summary = run_search(policy, load_registry(), settings)
    assert summary["counts"]["gated"] == 2
    assert all(t["constraints"]["max_accuracy_drop"] > 0 for t in summary["trials"])


BITS_ONLY = """\
schema_version: 1
task: digits-cnn
pipeline:
  quantizer: torch-int8
search:
  space:
    - layers: ["*"]
      bits: [8, 32]
  sampler: {sampler}
  reference_plans: false
measure:
  rounds: 3
  batch_sizes: [8]
"""


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "gp"])
def test_every_builtin_sampler_drives_a_search(sampler: str, tmp_path: Path) -> None:
    path = tmp_path / "bits.yaml"
    path.write_text(BITS_ONLY.format(sampler=sampler))
    policy = load_policy(path)
    settings = SearchSettings.resolve(policy, budget="3", runs_dir=tmp_path, track=False, progress=False)
    summary = run_search(policy, load_registry(), settings)
    assert summary["counts"]["complete"] == 3
    assert summary["pareto"]


def test_feature_kd_recovers_the_trials_of_a_search(tmp_path: Path) -> None:
    """The same enqueued plans, searched once without recovery and once with feature-kd: the pruned
    plans come out more accurate with it."""
    accuracy: dict[str, dict[int, float]] = {}
    for distiller in ("none", "feature-kd"):
        policy = load_policy(_custom_policy(tmp_path, distiller=distiller))
        settings = SearchSettings.resolve(
            policy, budget="4", runs_dir=tmp_path / distiller, track=False, progress=False
        )
        summary = run_search(policy, load_registry(), settings)
        assert summary["counts"]["complete"] == 4
        accuracy[distiller] = {t["number"]: t["metrics"]["accuracy"] for t in summary["trials"]}
    # trials 2 and 3 are the uniform reference plans (half of every range, float and int8): pruned
    for number in (2, 3):
        assert accuracy["feature-kd"][number] > accuracy["none"][number]
    for number in (0, 1):  # unchanged and int8-only: nothing to recover
        assert accuracy["feature-kd"][number] == accuracy["none"][number]


def test_a_misspelt_objective_is_refused_with_the_metrics_trials_report(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        QUICKSTART.read_text().replace(
            "{metric: macs, direction: minimize}", "{metric: mac, direction: minimize}"
        )
    )
    args = ["search", str(path), "--budget", "1", "--runs-dir", str(tmp_path), "--no-track"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert f"{path}:" in output
    assert "field 'search.objectives.1.metric': unknown metric 'mac' (did you mean 'macs'?)" in output
    assert not optuna.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}")  # no study was started
