"""Import a Hugging Face BERT directory (DynaBERT's checkpoints have this format) as a BERT
SuperNet.

The directory holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, read
with ``torch.load(weights_only=True)``: tensors only, never arbitrary pickled objects). Keys
are those of ``BertForSequenceClassification`` (``bert.`` prefix, ``classifier``); a bare
``BertModel`` state (no prefix, no classifier) is refused: a served SuperNet needs its head.

DynaBERT rewires each layer before training so that the most important heads and FFN
neurons come first; WeightSlice's "first heads / first neurons" is then its width rule, and
LayerSelect's spread-out layers its depth rule.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoint import CheckpointError
from .model import SuperTransformer
from .space import TransformerSpec, bert_spec

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"


def read_bert_dir(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict) of a Hugging Face BERT directory."""
    root = Path(path)
    cfg_path = root / CONFIG
    if not cfg_path.exists():
        raise CheckpointError(f"{root}: no {CONFIG}; pass a directory written by save_pretrained()")
    try:
        config = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{cfg_path}: not JSON ({exc})") from None
    if (root / SAFETENSORS).exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(root / SAFETENSORS))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{root / SAFETENSORS}: not a readable safetensors file ({exc})") from None
    elif (root / TORCH_BIN).exists():
        try:
            state = torch.load(root / TORCH_BIN, map_location="cpu", weights_only=True)
        except Exception as exc:  # the weights-only unpickler refuses anything but tensors
            raise CheckpointError(f"{root / TORCH_BIN}: not a weights-only state dict ({exc})") from None
    else:
        raise CheckpointError(f"{root}: neither {SAFETENSORS} nor {TORCH_BIN}")
    return config, state


def _check_config(config: dict, where: Path) -> None:
    model_type = config.get("model_type", "bert")
    if model_type != "bert":
        raise CheckpointError(f"{where}: model_type {model_type!r}; only BERT is supported")
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{where}: hidden_act {config.get('hidden_act')!r}; only 'gelu' (erf) is supported")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{where}: position_embedding_type {config['position_embedding_type']!r}; "
                              "only 'absolute' is supported")
    if config.get("pruned_heads"):
        raise CheckpointError(f"{where}: heads were already pruned ({config['pruned_heads']}); import the "
                              "unpruned model: SubNets prune by WeightSlice at run time")
    if config.get("problem_type") not in (None, "single_label_classification"):
        raise CheckpointError(f"{where}: problem_type {config['problem_type']!r}; only single-label "
                              "classification is served")


def bert_names(spec: TransformerSpec) -> dict[str, str]:
    """Own state-dict key -> the Hugging Face key of the same tensor."""
    names = {
        "embeddings.word": "bert.embeddings.word_embeddings.weight",
        "embeddings.position": "bert.embeddings.position_embeddings.weight",
        "embeddings.token_type": "bert.embeddings.token_type_embeddings.weight",
        "embeddings.ln.weight": "bert.embeddings.LayerNorm.weight",
        "embeddings.ln.bias": "bert.embeddings.LayerNorm.bias",
        "pooler.weight": "bert.pooler.dense.weight", "pooler.bias": "bert.pooler.dense.bias",
        "classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias",
    }
    per_layer = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "attn_out": "attention.output.dense", "ln1": "attention.output.LayerNorm",
                 "fc1": "intermediate.dense", "fc2": "output.dense", "ln2": "output.LayerNorm"}
    for i in range(spec.num_layers):
        for own, hf in per_layer.items():
            for p in ("weight", "bias"):
                names[f"layers.{i}.{own}.{p}"] = f"bert.encoder.layer.{i}.{hf}.{p}"
    return names


def _legacy(key: str) -> str:  # the original BERT / DynaBERT releases name LayerNorm gamma / beta
    return key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")


def import_bert(path: str | Path, seq_len: int = 128, depth_choices: tuple[float, ...] = (0.5, 0.75, 1.0),
                width_choices: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)) -> SuperTransformer:
    """A BERT SuperNet holding the directory's weights (eval mode). ``seq_len``: the token
    count of a served request; the width choices become head and FFN counts (DynaBERT's
    width multipliers)."""
    root = Path(path)
    config, state = read_bert_dir(root)
    _check_config(config, root)
    if seq_len > int(config["max_position_embeddings"]):
        raise ValueError(f"seq_len {seq_len} exceeds max_position_embeddings {config['max_position_embeddings']}")
    spec = bert_spec(config, seq_len, depth_choices, width_choices)
    model = SuperTransformer(spec)
    own = model.state_dict()
    with torch.no_grad():
        for key, hf in bert_names(spec).items():
            src = state.get(hf, state.get(_legacy(hf)))
            if src is None:
                raise CheckpointError(f"{root}: missing {hf!r}; is it a BertForSequenceClassification checkpoint?")
            if tuple(src.shape) != tuple(own[key].shape):
                raise CheckpointError(f"{root}: {hf!r} has shape {tuple(src.shape)}, config.json implies "
                                      f"{tuple(own[key].shape)}")
            own[key].copy_(src)
    return model.eval()
