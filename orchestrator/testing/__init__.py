"""What plugin authors need to test their components, shipped with the package.

- Contract suites (:mod:`orchestrator.testing.contracts`): subclass :class:`ScorerContract`,
  :class:`PrunerContract`, :class:`QuantizerContract`, :class:`DistillerContract`, :class:`TaskContract`
  or :class:`SamplerContract` in a test file, set ``component`` (and ``options``), and pytest runs the
  inherited tests; the builtins pass the same suites.
- pytest fixtures (:mod:`orchestrator.testing.fixtures`, opt-in with
  ``pytest_plugins = ["orchestrator.testing.fixtures"]``): an isolated registry, the tiny task and models.
- :func:`isolated_registry`, the ``tiny-digits`` task (:class:`TinyDigits`) and tiny models.

This package needs pytest (the ``testing`` extra); ``import orchestrator`` never imports it.
"""

from __future__ import annotations

from orchestrator.testing.contracts import (
    ComponentContract,
    DistillerContract,
    OnTaskContract,
    PrunerContract,
    QuantizerContract,
    SamplerContract,
    ScorerContract,
    TaskContract,
)
from orchestrator.testing.models import TinyCNN, TinyMLP, TinyResNet, tiny_model
from orchestrator.testing.registry import isolated_registry
from orchestrator.testing.tasks import TinyDigits, TinyDigitsOptions

__all__ = [
    "ComponentContract",
    "DistillerContract",
    "OnTaskContract",
    "PrunerContract",
    "QuantizerContract",
    "SamplerContract",
    "ScorerContract",
    "TaskContract",
    "TinyCNN",
    "TinyDigits",
    "TinyDigitsOptions",
    "TinyMLP",
    "TinyResNet",
    "isolated_registry",
    "tiny_model",
]
