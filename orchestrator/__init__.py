"""compression-orchestrator: search per-layer pruning and quantization plans, measured for real.

Importing this package loads no plugin and does not import torch; both happen when asked.
"""

from __future__ import annotations

from orchestrator.batchnorm import recalibrate_batchnorm
from orchestrator.components import (
    Component,
    ComponentOptions,
    Distiller,
    Pruner,
    Quantizer,
    RecoveryMonitor,
    RecoveryStopped,
    SamplerFactory,
    Scorer,
    Scores,
)
from orchestrator.errors import (
    DuplicateComponentError,
    MissingExtraError,
    ModelFileError,
    OrchestratorError,
    PlanError,
    PluginLoadError,
    PolicyError,
    UnknownComponentError,
)
from orchestrator.hookspecs import hookimpl, hookspec
from orchestrator.plan import CompressionPlan, LayerDecision
from orchestrator.policy import Policy, load_policy, parse_policy, policy_json_schema
from orchestrator.recipe import Rebatched, TrainingRecipe
from orchestrator.registry import ComponentRegistry, PluginRegistry, load_registry
from orchestrator.task import (
    Batch,
    ClassificationTask,
    ShuffledBatches,
    Task,
    TaskOptions,
    cache_dir,
    classification_accuracy,
    classification_task,
    fixed_batches,
)

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Component",
    "ComponentOptions",
    "ComponentRegistry",
    "CompressionPlan",
    "Distiller",
    "DuplicateComponentError",
    "LayerDecision",
    "MissingExtraError",
    "ModelFileError",
    "OrchestratorError",
    "PlanError",
    "PluginLoadError",
    "PluginRegistry",
    "Policy",
    "PolicyError",
    "Pruner",
    "Quantizer",
    "Rebatched",
    "RecoveryMonitor",
    "RecoveryStopped",
    "SamplerFactory",
    "Scorer",
    "Scores",
    "ShuffledBatches",
    "Task",
    "TaskOptions",
    "TrainingRecipe",
    "ClassificationTask",
    "classification_task",
    "UnknownComponentError",
    "__version__",
    "cache_dir",
    "classification_accuracy",
    "fixed_batches",
    "hookimpl",
    "hookspec",
    "load_policy",
    "load_registry",
    "parse_policy",
    "recalibrate_batchnorm",
    "policy_json_schema",
]
