"""DynaBERT-format import (superserve/supernet/vit/bert_import.py), proven against Hugging
Face's BertForSequenceClassification on random weights: a SubNet of the imported SuperNet
gives the reference model's logits once that model has the same layers dropped, heads
pruned and FFN neurons removed."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from superserve.supernet import CheckpointError  # noqa: E402
from superserve.supernet.vit import TransformerChoice, kept_layers  # noqa: E402
from superserve.supernet.vit.bert_import import import_bert  # noqa: E402
from superserve.supernet.vit.extract import extract  # noqa: E402

SEQ = 12


class Payload:
    """A pickled object that is not a tensor: what a weights-only load must refuse."""


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=96, max_position_embeddings=32, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines and biases (their init is 1 / 0)
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp("bert")
    model.save_pretrained(path)
    return path


def _linear_keep(lin: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """``lin`` keeping only the output rows (dim 0) or input columns (dim 1) in ``index``
    (what transformers' prune_linear_layer did)."""
    w = lin.weight.index_select(dim, index).clone()
    b = lin.bias.clone() if dim == 1 else lin.bias[index].clone()
    out = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(b)
    return out


def reference_subnet(hf: nn.Module, choice: TransformerChoice) -> nn.Module:
    """The reference model reduced to one SubNet with Hugging Face's own modules: layers
    dropped by DynaBERT's rule, the heads after the first ``heads`` pruned, FFN neurons
    after the first ``ffn`` removed."""
    ref = copy.deepcopy(hf)
    layers = ref.bert.encoder.layer
    keep = kept_layers(len(layers), choice.depth)
    ref.bert.encoder.layer = nn.ModuleList(layers[i] for i in keep)
    head_dim = ref.config.hidden_size // ref.config.num_attention_heads
    with torch.no_grad():
        for layer, heads, ffn in zip(ref.bert.encoder.layer, choice.heads, choice.ffn):
            att = layer.attention
            rows = torch.arange(heads * head_dim)  # the kept heads' rows (heads heads..H-1 pruned)
            for name in ("query", "key", "value"):
                setattr(att.self, name, _linear_keep(getattr(att.self, name), rows, 0))
            att.self.num_attention_heads, att.self.all_head_size = heads, heads * head_dim
            att.output.dense = _linear_keep(att.output.dense, rows, 1)
            neurons = torch.arange(ffn)
            layer.intermediate.dense = _linear_keep(layer.intermediate.dense, neurons, 0)
            layer.output.dense = _linear_keep(layer.output.dense, neurons, 1)
    return ref.eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 120, (3, SEQ), generator=g)
    ids[1, 8:] = 0  # padding (pad_token_id 0): masked out
    ids[2, 5:] = 0
    return ids, (ids != 0).long()


def _choices(spec) -> list[TransformerChoice]:
    uniform = [spec.uniform(d, h, f) for d in spec.depth_choices
               for h, f in zip(spec.head_choices, spec.ffn_choices)]
    return uniform + [TransformerChoice(0.75, (1, 4, 2), (24, 96, 48), 48),
                      TransformerChoice(0.5, (3, 1), (72, 24), 48)]


@torch.no_grad()
def test_imported_subnets_equal_the_pruned_reference(hf_dir):
    hf = transformers.BertForSequenceClassification.from_pretrained(hf_dir, attn_implementation="eager").eval()
    model = import_bert(hf_dir, seq_len=SEQ)
    spec = model.spec
    assert spec.head_choices == (1, 2, 3, 4) and spec.ffn_choices == (24, 48, 72, 96)
    ids, mask = _inputs()
    full = hf(input_ids=ids, attention_mask=mask).logits
    model.actuate(spec.largest())
    assert (model(ids) - full).abs().max() < 1e-4
    for choice in _choices(spec):
        ref = reference_subnet(hf, choice)(input_ids=ids, attention_mask=mask).logits
        model.actuate(choice.id)
        ours = model(ids)
        assert (ours - ref).abs().max() < 1e-4, choice.id
        assert (extract(model, choice)(ids) - ours).abs().max() < 1e-5, choice.id
        # ids carried in a float32 slab (the serving worker's) give the same answer
        assert torch.equal(model(ids.float().view(3, 1, 1, SEQ)), ours)


@torch.no_grad()
def test_pytorch_model_bin_is_read_weights_only(hf_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(hf_dir / "model.safetensors"))
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    torch.save(state, tmp_path / "pytorch_model.bin")
    a, b = import_bert(hf_dir, seq_len=SEQ), import_bert(tmp_path, seq_len=SEQ)
    ids, _ = _inputs()
    assert torch.equal(a(ids), b(ids))

    torch.save({"x": Payload()}, tmp_path / "pytorch_model.bin")  # refused, never unpickled
    with pytest.raises(CheckpointError, match="weights-only"):
        import_bert(tmp_path, seq_len=SEQ)


def test_import_refuses_what_it_cannot_serve(hf_dir, tmp_path):
    import json

    (tmp_path / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    config = json.loads((hf_dir / "config.json").read_text())
    for change, message in (({"hidden_act": "relu"}, "hidden_act"),
                            ({"pruned_heads": {"0": [1]}}, "already pruned"),
                            ({"model_type": "roberta"}, "only BERT")):
        (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(CheckpointError, match=message):
            import_bert(tmp_path, seq_len=SEQ)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        import_bert(tmp_path, seq_len=64)
