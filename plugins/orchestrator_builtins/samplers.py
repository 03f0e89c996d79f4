"""Samplers ``tpe``, ``nsga2``, ``random`` and ``gp``: Optuna's, registered like any other component."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from pydantic import Field

from orchestrator import ComponentOptions, SamplerFactory, hookimpl


class TPEOptions(ComponentOptions):
    #: random trials before TPE models the results (enqueued reference plans count)
    n_startup_trials: int = Field(default=6, ge=0)
    #: model the variables jointly (Optuna's multivariate TPE)
    multivariate: bool = True
    #: treat running trials of other workers as bad, so parallel workers spread out
    constant_liar: bool = True


class TPE(SamplerFactory[TPEOptions]):
    """Tree-structured Parzen estimator, multivariate, constraint-aware (default)."""

    name: ClassVar[str] = "tpe"
    Options = TPEOptions

    def create(self, *, seed: int | None) -> Any:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=self.options.n_startup_trials,
                multivariate=self.options.multivariate,
                group=self.options.multivariate,
                constant_liar=self.options.constant_liar,
            )


class NSGA2Options(ComponentOptions):
    #: plans per generation
    population_size: int = Field(default=8, ge=2)
    #: probability of mutating each variable (default: 1 / number of variables)
    mutation_prob: float | None = Field(default=None, ge=0, le=1)
    #: probability that a child plan mixes two parents
    crossover_prob: float = Field(default=0.9, ge=0, le=1)


class NSGA2(SamplerFactory[NSGA2Options]):
    """NSGA-II genetic algorithm, constraint-aware."""

    name: ClassVar[str] = "nsga2"
    Options = NSGA2Options

    def create(self, *, seed: int | None) -> Any:
        import optuna

        return optuna.samplers.NSGAIISampler(
            seed=seed,
            population_size=self.options.population_size,
            mutation_prob=self.options.mutation_prob,
            crossover_prob=self.options.crossover_prob,
        )


class RandomOptions(ComponentOptions):
    pass


class Random(SamplerFactory[RandomOptions]):
    """Uniform random sampling (the baseline every other sampler should beat)."""

    name: ClassVar[str] = "random"
    Options = RandomOptions

    def create(self, *, seed: int | None) -> Any:
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


class GPOptions(ComponentOptions):
    #: random trials before the model-based sampler takes over
    n_startup_trials: int = Field(default=6, ge=0)


class GP(SamplerFactory[GPOptions]):
    """Gaussian-process Bayesian optimisation (needs scipy), constraint-aware."""

    name: ClassVar[str] = "gp"
    Options = GPOptions

    def create(self, *, seed: int | None) -> Any:
        import optuna

        from orchestrator import MissingExtraError

        try:
            import scipy  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("scipy", "dev") from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=self.options.n_startup_trials)


@hookimpl
def orchestrator_register(registry: Any) -> None:
    for sampler in (TPE, NSGA2, Random, GP):
        registry.register(sampler)
