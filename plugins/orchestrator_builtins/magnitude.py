"""Scorer ``magnitude``: L1/L2 norm of each output channel's weights, averaged per layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from orchestrator import ComponentOptions, Scorer, Scores, Task, hookimpl

if TYPE_CHECKING:
    from collections.abc import Sequence


class MagnitudeOptions(ComponentOptions):
    #: norm of the weights (L1 or L2)
    p: Literal[1, 2] = 1
    #: divide each channel's norm by (weights per channel)^(1/p), so layers of different fan-in compare
    normalize: bool = True


class MagnitudeScorer(Scorer[MagnitudeOptions]):
    """Weight magnitude per output channel (L1 or L2) and its mean per layer."""

    name: ClassVar[str] = "magnitude"
    Options = MagnitudeOptions
    per_channel: ClassVar[bool] = True

    def score(self, model: Any, task: Task[Any], layers: Sequence[str]) -> Scores:
        import torch

        p = self.options.p
        channels: dict[str, list[float]] = {}
        per_layer: dict[str, float] = {}
        with torch.no_grad():
            for name in layers:
                weight = getattr(model.get_submodule(name), "weight", None)
                if not isinstance(weight, torch.Tensor):
                    continue
                flat = weight.detach().float().flatten(1) if weight.dim() > 1 else weight[:, None]
                norms = flat.abs().pow(p).sum(1).pow(1.0 / p)
                if self.options.normalize:
                    norms = norms / flat.shape[1] ** (1.0 / p)
                channels[name] = norms.tolist()
                per_layer[name] = float(norms.mean())
        return Scores(layers=per_layer, channels=channels, details={"p": p})


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(MagnitudeScorer)
