"""A plugin whose components fail the way real ones do, for the failure-isolation tests.

- distiller ``failing``: ``mode: raise`` has a bug, ``memory`` asks for a buffer no machine has,
  ``nan`` diverges (every weight NaN), ``overflow`` blows the logits up (finite, but huge and wrong).
- task ``digits-loss``: ``digits-cnn`` (the same cached baseline) that also reports the evaluation
  ``loss`` and its ``perplexity`` = exp(loss), which overflow to inf for huge wrong logits.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from orchestrator_builtins.digits_cnn import DigitsCNN

from orchestrator import ComponentOptions, Distiller, hookimpl


class FailingOptions(ComponentOptions):
    mode: Literal["raise", "memory", "nan", "overflow"]


class FailingDistiller(Distiller[FailingOptions]):
    name: ClassVar[str] = "failing"
    Options = FailingOptions

    def distill(self, student: Any, teacher: Any, task: Any, *, monitor: Any = None) -> Any:
        import torch

        mode = self.options.mode
        if mode == "raise":
            raise RuntimeError("plugin bug: shapes do not match")
        if mode == "memory":
            bytearray(1 << 60)  # an exabyte
        with torch.no_grad():
            if mode == "nan":
                for parameter in student.parameters():
                    parameter.fill_(float("nan"))
            elif mode == "overflow":
                last = [m for m in student.modules() if isinstance(m, torch.nn.Linear)][-1]
                last.weight.mul_(-1e4)
        return student.eval()


class DigitsWithLoss(DigitsCNN):
    name: ClassVar[str] = "digits-loss"

    def baseline_path(self) -> Any:
        return DigitsCNN(options=self.options).baseline_path()

    def evaluate(self, model: Any) -> dict[str, float]:
        import torch

        metrics = super().evaluate(model)
        total = count = 0.0
        with torch.inference_mode():
            for batch in self.eval_data():
                total += float(self.loss(model(*self.inputs(batch)), batch)) * len(batch[1])
                count += len(batch[1])
        metrics["loss"] = total / count
        metrics["perplexity"] = float(torch.exp(torch.tensor(total / count, dtype=torch.float32)))
        return metrics


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(FailingDistiller)
    registry.register(DigitsWithLoss)
