"""Apply one plan to one model: prune → distill → quantize → measure."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.artifact import load_artifact, save_artifact
from orchestrator.batchnorm import recalibrate_batchnorm
from orchestrator.environment import policy_environment
from orchestrator.errors import PlanError
from orchestrator.layers import compressible_layers, current_names, droppable_blocks
from orchestrator.measure import (
    compare_latency,
    count_macs_params,
    latency_metrics,
    load_average,
    theoretical_bytes,
)
from orchestrator.plan import CompressionPlan, rename
from orchestrator.policy import MeasureSpec, Policy
from orchestrator.routing import relocate, routed_plans
from orchestrator.steps import PipelineSteps, asked_by
from orchestrator.task import Task

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from torch import nn

    from orchestrator.components import (
        Distiller,
        Pruner,
        Quantizer,
        RecoveryMonitor,
        Scorer,
        Scores,
    )
    from orchestrator.registry import PluginRegistry

__all__ = ["Baseline", "Compressed", "Pipeline", "apply_policy"]


@dataclass
class Baseline:
    """The uncompressed model and its metrics, computed once and shared by every plan."""

    model: nn.Module
    metrics: dict[str, float]
    artifact: Path
    scores: Scores | None = None
    _loaded: nn.Module | None = None

    def loaded_artifact(self) -> nn.Module:
        """The saved baseline artifact, loaded once: every trial's latency is measured beside it."""
        if self._loaded is None:
            self._loaded = load_artifact(self.artifact)
        return self._loaded


@dataclass
class Compressed:
    """A plan applied: the model, its metrics and where its artifact is."""

    plan: CompressionPlan
    model: nn.Module
    metrics: dict[str, float]
    artifact: Path | None = None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)


def targets_of(scorer: Scorer[Any], model: nn.Module, example_inputs: tuple[Any, ...]) -> list[str]:
    """What ``scorer`` scores in ``model``: its compressible layers or its droppable blocks."""
    if scorer.targets == "blocks":
        return droppable_blocks(model, example_inputs)
    return list(compressible_layers(model))


@dataclass
class Pipeline:
    """The components of one policy, ready to apply plans to the task's model."""

    task: Task[Any]
    pruners: list[Pruner[Any]] = field(default_factory=list)
    distiller: Distiller[Any] | None = None
    quantizers: list[Quantizer[Any]] = field(default_factory=list)
    scorer: Scorer[Any] | None = None
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    seed: int = 0
    #: training batches BatchNorm statistics are re-estimated on after a structural change (0: off)
    bn_recalibration: int = 16

    @classmethod
    def from_policy(cls, policy: Policy, registry: PluginRegistry) -> Pipeline:
        policy.check_components(registry.components)
        comps = registry.components
        made: dict[str, Any] = {"pruners": [], "quantizers": []}
        for kind, spec, _ in policy.pipeline.steps():
            component = comps.create(kind, spec.name, spec.options)
            if kind in ("pruner", "quantizer"):
                made[f"{kind}s"].append(component)
            else:
                made[kind] = component
        task = comps.create("task", policy.task.name, policy.task.options)
        assert isinstance(task, Task)
        return cls(
            task=task,
            measure=policy.measure,
            seed=policy.seed,
            bn_recalibration=policy.pipeline.bn_recalibration,
            **made,
        )

    # -- baseline -----------------------------------------------------------------------------------
    def baseline(self, workdir: Path) -> Baseline:
        """Build and measure the baseline (params, MACs, metric, artifact size)."""
        model = self.task.build_model().eval()
        metrics = dict(self.task.evaluate(model))
        macs, params = count_macs_params(model, self.task.example_inputs())
        artifact = workdir / "baseline.pt"
        size = save_artifact(model, self.task.example_inputs(2), artifact)
        metrics.update(macs=macs, params=params, size_bytes=size, theoretical_bytes=4 * params)
        return Baseline(model=model, metrics=metrics, artifact=artifact)

    def scores(self, baseline: Baseline) -> Scores | None:
        """The scorer's result on the baseline (computed once)."""
        if self.scorer is None:
            return None
        if baseline.scores is None:
            model = copy.deepcopy(baseline.model)
            targets = targets_of(self.scorer, model, self.task.example_inputs(2))
            baseline.scores = self.scorer.score(model, self.task, targets)
        return baseline.scores

    # -- one plan -------------------------------------------------------------------------------------
    def quantizer_report(self) -> list[dict[str, Any]] | None:
        """Each quantizer, whether it only simulates, and per bit-width whether it runs faster here."""
        if not self.quantizers:
            return None
        return [
            {
                "name": q.name,
                "simulated": q.simulated,
                "supports": q.describe_support(),
                "accelerates": {str(b): q.accelerates(b) for b in sorted(q.supported_bits)},
            }
            for q in self.quantizers
        ]

    def check_plan(self, plan: CompressionPlan, model: nn.Module) -> None:
        """Refuse a plan this pipeline cannot carry out, before any work."""
        compressible = compressible_layers(model)
        kept = CompressionPlan(layers={n: d for n, d in plan.layers.items() if not d.drop})
        kept.check_layers(list(compressible))
        if plan.dropped():  # whole blocks are dropped, and only those that can be
            plan.check_layers([n for n, _ in model.named_modules() if n])
            blocks = droppable_blocks(model, self.task.example_inputs(2))
            for name in plan.dropped():
                if name not in blocks:
                    raise PlanError(
                        f"'{name}' cannot be dropped: only blocks whose output is their input plus "
                        f"a residual (or layers of a transformer stack) can; droppable: "
                        f"{', '.join(blocks) or 'none'}",
                        field=f"plan.layers.{name}.drop",
                    )
        steps = PipelineSteps(
            {p.name: type(p) for p in self.pruners}, {q.name: type(q) for q in self.quantizers}
        )
        conflict = steps.conflict()
        if conflict is not None:
            raise PlanError(conflict, field="pipeline.pruner")
        for name, decision in plan.layers.items():
            for variable, bits in asked_by(decision).items():
                why = steps.lacks(variable, bits)
                if why is not None:
                    raise PlanError(f"layer '{name}' {why}", field=f"plan.layers.{name}.{variable}")
        routed_plans(self.quantizers, compressible, plan)

    def prune(self, plan: CompressionPlan, baseline: Baseline) -> nn.Module:
        """A pruned copy of the baseline (a plain copy if the plan prunes nothing), its BatchNorm
        statistics re-estimated when the plan changed its structure."""
        self.check_plan(plan, baseline.model)
        student = copy.deepcopy(baseline.model)
        if plan.prune_ratios() or plan.dropped():
            scores = self.scores(baseline)
            for pruner in self.pruners:
                student = pruner.prune(student, plan, self.task, scores=scores)
                if pruner.handles_drop:  # what was inside a dropped block is gone, later layers moved up
                    plan = self.after_drops(plan, student)
            recalibrate_batchnorm(student, self.task, self.bn_recalibration)
        return student.eval()

    @staticmethod
    def after_drops(plan: CompressionPlan, model: nn.Module) -> CompressionPlan:
        """``plan`` for ``model`` after a depth pruner: without what was dropped, with moved names."""
        return plan.without_dropped_descendants().renamed(current_names(model))

    def quantize(self, model: nn.Module, plan: CompressionPlan) -> tuple[nn.Module, dict[str, str]]:
        """``model`` with the plan's bits applied, and the name of the quantizer of each layer."""
        quantized_by: dict[str, str] = {}
        if plan.bits():
            quantizable = compressible_layers(model)
            for quantizer, routed in routed_plans(self.quantizers, quantizable, plan):
                quantized_by.update(dict.fromkeys(routed.layers, quantizer.name))
                model = quantizer.quantize(model, relocate(routed, model), self.task).eval()
        return model, quantized_by

    def compress(
        self,
        plan: CompressionPlan,
        baseline: Baseline,
        *,
        monitor: RecoveryMonitor | None = None,
        pruned: nn.Module | None = None,
    ) -> Compressed:
        """Prune, recover and quantize a copy of the baseline; evaluate it and count its cost.

        ``pruned`` is the result of :meth:`prune` for this plan when the caller already has it.
        """
        import torch

        student = pruned if pruned is not None else self.prune(plan, baseline)
        macs, params = count_macs_params(student, self.task.example_inputs())
        metric = self.task.metric
        before = baseline.metrics[metric]
        changed = bool(plan.prune_ratios() or plan.dropped())
        if changed:  # the pruned model as it is (statistics recalibrated), before any recovery
            before = float(self.task.evaluate(student.eval())[metric])
        if self.distiller is not None and changed:
            torch.manual_seed(self.seed)
            student = self.distiller.distill(student, baseline.model, self.task, monitor=monitor)
        student.eval()
        model = student
        bits = plan.bits()
        current = self.after_drops(plan, student)  # the plan under the pruned model's names
        theoretical = theoretical_bytes(student, current.bits())  # before quantizers replace layers
        model, moved_by = self.quantize(student, current)
        back = {new: old for old, new in current_names(student).items()}  # report under the plan's names
        quantized_by = {rename(name, back): quantizer for name, quantizer in moved_by.items()}
        metrics = dict(self.task.evaluate(model))
        for key, value in metrics.items():
            if not math.isfinite(value):
                raise FloatingPointError(f"metric '{key}' is {value}")
        metrics.update(
            {f"{metric}_pruned": before},
            macs=macs,
            params=params,
            theoretical_bytes=theoretical,
        )
        for pruner in self.pruners:
            metrics.update(pruner.metrics(model))
        for quantizer in self.quantizers:
            metrics.update(quantizer.metrics(model))
        layers = {
            name: {
                "type": type(module).__name__,
                "prune_ratio": plan.decision(name).prune_ratio,
                "bits": bits.get(name, 32),
                "drop": plan.decision(name).drop,
                "quantizer": quantized_by.get(name),
            }
            for name, module in compressible_layers(baseline.model).items()
        }
        return Compressed(plan=plan, model=model, metrics=metrics, layers=layers)

    def finish(self, result: Compressed, baseline: Baseline, out_dir: Path) -> Compressed:
        """Save the artifact and measure its size and (interleaved with the baseline) its latency."""
        artifact = out_dir / "model.pt"
        result.metrics["size_bytes"] = save_artifact(result.model, self.task.example_inputs(2), artifact)
        result.artifact = artifact
        if self.measure.latency:
            lat = compare_latency(
                {
                    "baseline": baseline.loaded_artifact(),
                    "compressed": load_artifact(artifact),
                },
                self.task.example_inputs,
                self.measure,
            )
            baseline.metrics.update(latency_metrics(lat["baseline"]))
            result.metrics.update(latency_metrics(lat["compressed"]))
            result.metrics["load_average"] = baseline.metrics["load_average"] = load_average()
        return result


def ratios(compressed: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """``compressed / baseline`` for the cost metrics both have (``*_ratio``)."""
    out: dict[str, float] = {}
    for key, value in compressed.items():
        if key.startswith(("macs", "params", "size_bytes", "latency_ms")) and baseline.get(key):
            out[f"{key}_ratio"] = value / baseline[key]
    return out


def apply_policy(policy: Policy, registry: PluginRegistry, out_dir: Path) -> dict[str, Any]:
    """Apply the policy's fixed plan; write ``plan.yaml``, ``model.pt`` and ``metrics.json``."""
    if policy.plan is None:
        raise policy.error("this policy has no 'plan:' to apply", ("plan",))
    pipeline = Pipeline.from_policy(policy, registry)
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline = pipeline.baseline(out_dir)
    result = pipeline.finish(pipeline.compress(policy.plan, baseline), baseline, out_dir)
    (out_dir / "plan.yaml").write_text(policy.to_yaml(), encoding="utf-8")
    report: dict[str, Any] = {
        "task": policy.task.name,
        "metric": pipeline.task.metric,
        "baseline": baseline.metrics,
        "compressed": result.metrics,
        "ratios": ratios(result.metrics, baseline.metrics),
        "layers": result.layers,
        "artifact": str(result.artifact),
        "measure": policy.measure.model_dump(),
        "quantizers": pipeline.quantizer_report(),
        "environment": policy_environment(policy, registry.components),
    }
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    baseline.artifact.unlink(missing_ok=True)
    return report
