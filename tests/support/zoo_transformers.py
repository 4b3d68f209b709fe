"""Zoo models from Hugging Face transformers, the most common source of the ONNX text models platforms
serve: small architectures built from their configs (random weights: nothing is downloaded), exported by
torch.onnx.export's default (dynamo) exporter as their model cards show, with the tokenizer's tensor names
(input_ids, attention_mask, token_type_ids), INT64 inputs, a dynamic batch and a dynamic sequence
dimension, and a padded row in the request."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tests.support.zoo import Zoo
from tests.support.zoo_torch import DYNAMO_OPSET, add_dynamo_export, without_repo_triton

FAMILIES = (  # as exported, or zipped with the weights the exporter put beside it
    "transformers (tiny configs) by torch.onnx.export (dynamo)",
    "transformers (tiny configs) by torch.onnx.export (dynamo; weights in .onnx.data, zipped)",
)
VOCAB = 120
SEQUENCE = 7


def _tokens(*names: str) -> dict[str, np.ndarray]:
    """Two rows of SEQUENCE tokens, the second padded after 4 (what a tokenizer hands over)."""
    ids = np.random.default_rng(5).integers(1, VOCAB, (2, SEQUENCE), dtype=np.int64)
    mask = np.ones((2, SEQUENCE), dtype=np.int64)
    ids[1, 4:] = 0
    mask[1, 4:] = 0
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {name: arrays[name] for name in names}


def _models() -> dict[str, tuple[Callable[[], Any], tuple[str, ...], list[str]]]:
    """name -> (model factory, its inputs, its output names)."""
    import transformers as hf

    # Configs take these as keyword arguments (`**kwargs` for the generic ones such as num_labels).
    small: dict[str, Any] = {"vocab_size": VOCAB, "max_position_embeddings": 64}
    bert: dict[str, Any] = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}
    distilbert: dict[str, Any] = {"dim": 16, "n_layers": 2, "n_heads": 2, "hidden_dim": 32, "num_labels": 3}
    gpt2: dict[str, Any] = {"n_positions": 64, "n_embd": 16, "n_layer": 2, "n_head": 2, "use_cache": False}
    return {
        "hf-bert": (
            lambda: hf.BertModel(hf.BertConfig(**small, **bert, intermediate_size=32)),
            ("input_ids", "attention_mask", "token_type_ids"),
            ["last_hidden_state", "pooler_output"],
        ),
        "hf-distilbert-classifier": (
            lambda: hf.DistilBertForSequenceClassification(hf.DistilBertConfig(**small, **distilbert)),
            ("input_ids", "attention_mask"),
            ["logits"],
        ),
        "hf-gpt2": (
            lambda: hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=VOCAB, **gpt2)),
            ("input_ids", "attention_mask"),
            ["logits"],
        ),
    }


def add_transformers_exports(zoo: Zoo) -> None:
    with without_repo_triton():
        for name, (factory, names, outputs) in _models().items():
            zoo.attempt(name, functools.partial(_export, zoo, name, factory, names, outputs))


def _export(
    zoo: Zoo, name: str, factory: Callable[[], Any], names: tuple[str, ...], outputs: list[str]
) -> None:
    torch.manual_seed(0)
    model = factory().eval()
    inputs = _tokens(*names)
    batch = torch.export.Dim("batch", min=1, max=64)
    sequence = torch.export.Dim("sequence", min=2, max=64)
    path = zoo.path(name, ".onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (),
            str(path),
            kwargs={n: torch.from_numpy(inputs[n]) for n in names},
            input_names=list(names),
            output_names=outputs,
            dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
            opset_version=DYNAMO_OPSET,
            verbose=False,
        )
    add_dynamo_export(zoo, name, path, inputs, families=FAMILIES)
