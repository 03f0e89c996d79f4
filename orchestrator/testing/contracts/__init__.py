"""Contract test suites: subclass one in your test file, set ``component``, and pytest runs its tests.

::

    from orchestrator.testing import ScorerContract

    import my_plugin
    from my_plugin.scorer import MyScorer


    class TestMyScorer(ScorerContract):
        component = MyScorer
        options = {"p": 2}  # the options: block a policy would give it (default: none)
        plugin = my_plugin  # the module your entry point names (optional: checks it registers the class)

Every test asserts a promise of the component's base class (:mod:`orchestrator.components`,
:mod:`orchestrator.task`) that the pipeline and the search rely on, on the ``tiny-digits`` task of
:mod:`orchestrator.testing.tasks` (trained in memory in a fraction of a second) unless ``make_task`` is
overridden. The components are created through :func:`~orchestrator.testing.isolated_registry`, as a
policy creates them, and run with one thread (small models run as fast and are not slowed by busy
neighbours).
"""

from __future__ import annotations

from orchestrator.testing.contracts._base import ComponentContract, OnTaskContract
from orchestrator.testing.contracts.distiller import DistillerContract
from orchestrator.testing.contracts.pruner import PrunerContract
from orchestrator.testing.contracts.quantizer import QuantizerContract
from orchestrator.testing.contracts.sampler import SamplerContract
from orchestrator.testing.contracts.scorer import ScorerContract
from orchestrator.testing.contracts.task import TaskContract

__all__ = [
    "ComponentContract",
    "DistillerContract",
    "OnTaskContract",
    "PrunerContract",
    "QuantizerContract",
    "SamplerContract",
    "ScorerContract",
    "TaskContract",
]
