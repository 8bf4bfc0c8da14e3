"""Extraction: one transformer SubNet as a plain model (standard nn.Linear / nn.LayerNorm /
nn.MultiheadAttention-free modules holding sliced *copies* of the SuperNet's weights).

The plain model is written independently of the elastic operators (its own attention and
layer code, only the kept layers, no plan), so equality with the SuperNet's actuated forward
checks LayerSelect and WeightSlice rather than re-running them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import ElasticLinear, SuperTransformer, padding_mask, token_ids
from .space import TransformerChoice, kept_layers


def _linear(src: ElasticLinear, out: int, inp: int) -> nn.Linear:
    lin = nn.Linear(inp, out, bias=src.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(src.weight[:out, :inp])
        if src.bias is not None:
            lin.bias.copy_(src.bias[:out])
    return lin


def _layer_norm(src, channels: int) -> nn.LayerNorm:
    ln = nn.LayerNorm(channels, eps=src.eps)
    with torch.no_grad():
        ln.weight.copy_(src.weight[:channels])
        ln.bias.copy_(src.bias[:channels])
    return ln


class PlainLayer(nn.Module):
    def __init__(self, heads: int, head_dim: int, pre_norm: bool) -> None:
        super().__init__()
        self.heads, self.head_dim, self.pre_norm = heads, head_dim, pre_norm

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (m(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
                   for m in (self.query, self.key, self.value))
        scores = q @ k.transpose(-1, -2) / self.head_dim ** 0.5
        if mask is not None:
            scores = scores + mask
        ctx = scores.softmax(-1) @ v
        return self.attn_out(ctx.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x))
        if self.dwconv is not None:  # over the square token grid
            b, n, c = h.shape
            side = int(round(n ** 0.5))
            h = F.gelu(self.dwconv(h.transpose(1, 2).reshape(b, c, side, side)).flatten(2).transpose(1, 2))
        return self.fc2(h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attention(self.ln1(x), mask)
            return x + self.ffn(self.ln2(x))
        x = self.ln1(x + self.attention(x, mask))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class PlainTransformer(nn.Module):
    """A standalone ViT or BERT SubNet."""

    def __init__(self, is_bert: bool, pad_token_id: int = 0) -> None:
        super().__init__()
        self.is_bert, self.pad_token_id = is_bert, pad_token_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.is_bert:
            ids = token_ids(x)
            mask = padding_mask(ids, self.pad_token_id, self.word.weight.dtype)
            n = ids.shape[1]
            h = self.word(ids) + self.position.weight[:n] + self.token_type.weight[0]
            h = self.embed_ln(h)
        else:
            h = self.bn2(self.conv2(F.gelu(self.bn1(self.conv1(x))))).flatten(2).transpose(1, 2) + self.pos
        for layer in self.layers:
            h = layer(h, mask)
        if self.is_bert:
            return self.classifier(torch.tanh(self.pooler(h[:, 0])))
        return self.classifier(self.final_ln(h).mean(dim=1))


@torch.no_grad()
def extract(model: SuperTransformer, choice: TransformerChoice | str) -> PlainTransformer:
    """The plain model of one SubNet: copies of the weights it uses, nothing else."""
    if isinstance(choice, str):
        choice = TransformerChoice.from_id(choice)
    spec = model.spec
    spec.validate(choice)
    e = choice.embed
    plain = PlainTransformer(model.is_bert, spec.pad_token_id)
    if model.is_bert:
        emb = model.embeddings
        plain.word = nn.Embedding.from_pretrained(emb.word[:, :e].clone(), freeze=False)
        plain.position = nn.Embedding.from_pretrained(emb.position[:, :e].clone(), freeze=False)
        plain.token_type = nn.Embedding.from_pretrained(emb.token_type[:, :e].clone(), freeze=False)
        plain.embed_ln = _layer_norm(emb.ln, e)
        plain.pooler = _linear(model.pooler, e, e)
    else:
        stem = model.stem
        plain.conv1 = nn.Conv2d(spec.in_channels, spec.stem_channels, 3, 2, 1, bias=False)
        plain.conv1.load_state_dict(stem.conv1.state_dict())
        plain.bn1 = nn.BatchNorm2d(spec.stem_channels, eps=stem.bn1.eps)
        plain.bn1.load_state_dict(stem.bn1.state_dict())
        plain.conv2 = nn.Conv2d(spec.stem_channels, e, 3, 2, 1, bias=False)
        plain.conv2.weight.copy_(stem.conv2_weight[:e])
        plain.bn2 = nn.BatchNorm2d(e, eps=stem.bn2.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(plain.bn2, name).copy_(getattr(stem.bn2, name)[:e])
        plain.pos = nn.Parameter(stem.pos[:, :, :e].clone())
        plain.final_ln = _layer_norm(model.final_ln, e)
    layers = []
    for index, heads, ffn in zip(kept_layers(spec.num_layers, choice.depth), choice.heads, choice.ffn):
        src, inner = model.layers[index], heads * spec.head_dim
        dst = PlainLayer(heads, spec.head_dim, not model.is_bert)
        dst.query, dst.key, dst.value = (_linear(m, inner, e) for m in (src.query, src.key, src.value))
        dst.attn_out = _linear(src.attn_out, e, inner)
        dst.ln1, dst.ln2 = _layer_norm(src.ln1, e), _layer_norm(src.ln2, e)
        dst.fc1, dst.fc2 = _linear(src.fc1, ffn, e), _linear(src.fc2, e, ffn)
        dst.dwconv = None
        if src.side:
            dst.dwconv = nn.Conv2d(ffn, ffn, 3, 1, 1, groups=ffn)
            dst.dwconv.weight.copy_(src.dw_weight[:ffn])
            dst.dwconv.bias.copy_(src.dw_bias[:ffn])
        layers.append(dst)
    plain.layers = nn.ModuleList(layers)
    plain.classifier = _linear(model.classifier, spec.num_classes, e)
    return plain.eval()
