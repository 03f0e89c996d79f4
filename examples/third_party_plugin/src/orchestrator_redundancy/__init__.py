"""compression-orchestrator plugin ``redundancy``: finds what a model computes twice, or not at all.

- scorer ``activation-variance``: how much of each layer's output varies over the data, per channel;
- pruner ``fpgm``: structured channel pruning that removes the filters closest to the geometric median of
  their layer (He et al., CVPR 2019), through torch-pruning.

The entry point ``redundancy = "orchestrator_redundancy"`` (group ``orchestrator``) names this module;
``orchestrate`` calls its ``orchestrator_register`` hook at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator import hookimpl
from orchestrator_redundancy.fpgm import FPGMOptions, FPGMPruner
from orchestrator_redundancy.variance import ActivationVariance, VarianceOptions

if TYPE_CHECKING:
    from orchestrator import ComponentRegistry

__all__ = ["ActivationVariance", "FPGMOptions", "FPGMPruner", "VarianceOptions", "orchestrator_register"]
__version__ = "0.1.0"


@hookimpl
def orchestrator_register(registry: ComponentRegistry) -> None:
    registry.register(ActivationVariance)
    registry.register(FPGMPruner)
