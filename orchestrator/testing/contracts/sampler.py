"""The contract of a sampler factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from orchestrator.components import SamplerFactory
from orchestrator.testing.contracts._base import ComponentContract
from orchestrator.testing.contracts._support import create

if TYPE_CHECKING:
    from orchestrator.registry import PluginRegistry


class SamplerContract(ComponentContract):
    """``create`` gives a fresh Optuna sampler; the same seed gives the same suggestions; a
    ``multi_objective`` sampler drives a study with two objectives."""

    component: ClassVar[type[SamplerFactory[Any]]]
    base = SamplerFactory
    #: trials of each small study
    trials: ClassVar[int] = 5

    def _study(self, registry: PluginRegistry, seed: int | None, objectives: int = 1) -> Any:
        """A small study driven by a new sampler, with one or two objectives."""
        import optuna

        sampler = create(registry, self.component, self.options).create(seed=seed)
        assert isinstance(sampler, optuna.samplers.BaseSampler), f"create gave {type(sampler)!r}"
        directions: list[Literal["maximize", "minimize"]] = ["maximize", "minimize"]
        study = optuna.create_study(directions=directions[:objectives], sampler=sampler)

        def objective(trial: optuna.Trial) -> float | tuple[float, float]:
            ratio = trial.suggest_float("ratio", 0.0, 0.9, step=0.05)
            bits = trial.suggest_categorical("bits", [4, 8, 32])
            dropped = trial.suggest_int("drop", 0, 3)
            cost = (1 - ratio) * bits + dropped
            return (ratio + dropped, cost) if objectives == 2 else ratio * bits - dropped

        study.optimize(objective, n_trials=self.trials)
        return study

    @property
    def _objectives(self) -> int:
        return 2 if self.component.multi_objective else 1

    def test_create_gives_a_fresh_sampler(self, orchestrator_registry: PluginRegistry) -> None:
        factory = create(orchestrator_registry, self.component, self.options)
        assert factory.create(seed=0) is not factory.create(seed=0), "create returned the same sampler twice"
        self._study(orchestrator_registry, None)

    def test_same_seed_gives_the_same_suggestions(self, orchestrator_registry: PluginRegistry) -> None:
        first = self._study(orchestrator_registry, 7, self._objectives)
        second = self._study(orchestrator_registry, 7, self._objectives)
        assert [t.params for t in first.trials] == [t.params for t in second.trials]

    def test_drives_a_study_with_its_objectives(self, orchestrator_registry: PluginRegistry) -> None:
        study = self._study(orchestrator_registry, 0, self._objectives)
        assert len(study.trials) == self.trials
        assert all(t.state.name == "COMPLETE" for t in study.trials)
        assert study.best_trials
