"""Transformer SuperNets (ViT and BERT) built from the SubNetAct operators.

LayerSelect runs the layers DynaBERT's depth rule keeps (space.kept_layers); WeightSlice
gives each kept layer the first ``heads`` attention heads (rows of Q, K, V and columns of the
output projection) and the first ``ffn`` FFN neurons, and the whole network the first
``embed`` embedding channels; LayerNorm affine parameters are shared and sliced to the
active width. LayerNorm normalises each token over its own channels, so, unlike BatchNorm,
no per-SubNet statistics exist: there is no SubnetNorm table to calibrate (``norm_modules()``
is empty; ``norm_rows`` still lists the served SubNets, as the bundle files expect).

``actuate(id)`` swaps a precomputed, immutable plan of plain integers; no tensor is touched.
Serving (eval mode, no autograd) runs a ViT SubNet through a compiled program: the plan's
weight slices taken once as views (no tensor data copied) and the forward as a flat list of
ATen calls, without module dispatch or per-call slicing (``prepare``, ``_run_vit_program``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import ProgramCache, SubnetNorm
from .space import FAMILY_BERT, TransformerChoice, TransformerSpec, kept_layers


@dataclass(frozen=True)
class TransformerPlan:
    """Everything a forward pass needs to run one SubNet, as plain integers."""

    subnet_id: str
    embed: int
    layers: tuple[tuple[int, int, int], ...]  # (layer index, active heads, active FFN neurons)
    norm_row: int = 0  # LayerNorm needs no statistics: every plan is servable


class ElasticLinear(nn.Module):
    """WeightSlice for a linear layer: weight[:out, :in] and bias[:out], views of the
    max-size parameters; ``in`` is taken from the input itself."""

    def __init__(self, max_in: int, max_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, out: int) -> torch.Tensor:
        b = None if self.bias is None else self.bias[:out]
        return F.linear(x, self.weight[:out, : x.shape[-1]], b)


class ElasticLayerNorm(nn.Module):
    """LayerNorm over the active channels, with the shared affine sliced to them."""

    def __init__(self, max_channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(max_channels))
        self.bias = nn.Parameter(torch.zeros(max_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        return F.layer_norm(x, (c,), self.weight[:c], self.bias[:c], self.eps)


class ElasticLayer(nn.Module):
    """One encoder layer: multi-head self-attention and a GELU FFN, each with a residual.
    Pre-norm (ViT: x + f(LN(x))) or post-norm (BERT: LN(x + f(x)))."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        e, inner = spec.embed_dim, spec.num_heads * spec.head_dim
        self.head_dim, self.pre_norm = spec.head_dim, spec.family != FAMILY_BERT
        self.query, self.key, self.value = ElasticLinear(e, inner), ElasticLinear(e, inner), ElasticLinear(e, inner)
        self.attn_out = ElasticLinear(inner, e)
        self.ln1 = ElasticLayerNorm(e, spec.ln_eps)
        self.fc1, self.fc2 = ElasticLinear(e, spec.ffn_dim), ElasticLinear(spec.ffn_dim, e)
        self.ln2 = ElasticLayerNorm(e, spec.ln_eps)
        # ViT: a 3x3 depthwise conv over the token grid inside the FFN (LocalViT, Li et al.
        # 2021): locality a small ViT otherwise learns slowly. Per channel, so WeightSlice
        # keeps its first ``ffn`` filters.
        self.side = int(ViTStem.tokens(spec) ** 0.5) if spec.ffn_dwconv and self.pre_norm else 0
        if self.side:
            self.dw_weight = nn.Parameter(torch.empty(spec.ffn_dim, 1, 3, 3))
            self.dw_bias = nn.Parameter(torch.zeros(spec.ffn_dim))
            nn.init.kaiming_normal_(self.dw_weight, mode="fan_out")

    def attention(self, x: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, e = x.shape
        inner = heads * self.head_dim

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, heads, self.head_dim).transpose(1, 2)

        q, k, v = (split(m(x, inner)) for m in (self.query, self.key, self.value))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.attn_out(ctx.transpose(1, 2).reshape(b, n, inner), e)

    def local(self, h: torch.Tensor) -> torch.Tensor:
        """The FFN's depthwise conv over the token grid (identity without one)."""
        if not self.side:
            return h
        b, n, c = h.shape
        g = h.transpose(1, 2).reshape(b, c, self.side, self.side)
        g = F.conv2d(g, self.dw_weight[:c], self.dw_bias[:c], 1, 1, 1, c)
        return g.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, heads: int, ffn: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        e = x.shape[-1]
        if self.pre_norm:
            x = x + self.attention(self.ln1(x), heads, mask)
            return x + self.fc2(F.gelu(self.local(F.gelu(self.fc1(self.ln2(x), ffn)))), e)
        x = self.ln1(x + self.attention(x, heads, mask))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x, ffn)), e))


class ViTStem(nn.Module):
    """Image -> tokens: 3x3/2 conv, BatchNorm, GELU, 3x3/2 conv to the active embedding width
    (its leading output channels), BatchNorm, plus a learned position embedding.

    Early convolutions make a small ViT train like a CNN (Xiao et al., 2021). Their BatchNorm
    needs no SubnetNorm: the stem runs before anything elastic, and output channel c of the
    second conv depends on row c of its kernel only, so every SubNet sees the same
    statistics for the channels it uses (plain running statistics, sliced)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(spec.in_channels, spec.stem_channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(spec.stem_channels)
        self.conv2_weight = nn.Parameter(torch.empty(spec.embed_dim, spec.stem_channels, 3, 3))
        nn.init.kaiming_normal_(self.conv2_weight, mode="fan_out")
        self.bn2 = nn.BatchNorm2d(spec.embed_dim)
        tokens = self.tokens(spec)
        self.pos = nn.Parameter(torch.zeros(1, tokens, spec.embed_dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    @staticmethod
    def tokens(spec: TransformerSpec) -> int:
        side = spec.input_size
        for _ in range(2):
            side = (side + 2 - 3) // 2 + 1
        return side * side

    def forward(self, x: torch.Tensor, embed: int) -> torch.Tensor:
        h = F.gelu(self.bn1(self.conv1(x)))
        h = F.conv2d(h, self.conv2_weight[:embed], None, 2, 1)
        bn = self.bn2
        h = F.batch_norm(h, bn.running_mean[:embed], bn.running_var[:embed], bn.weight[:embed], bn.bias[:embed],
                         self.training, bn.momentum, bn.eps)
        return h.flatten(2).transpose(1, 2) + self.pos[:, :, :embed]


class BertEmbeddings(nn.Module):
    """Word + position + token-type (all 0) embeddings, then LayerNorm (Hugging Face's)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.word = nn.Parameter(torch.zeros(spec.vocab_size, spec.embed_dim))
        self.position = nn.Parameter(torch.zeros(spec.max_position, spec.embed_dim))
        self.token_type = nn.Parameter(torch.zeros(spec.type_vocab_size, spec.embed_dim))
        self.ln = ElasticLayerNorm(spec.embed_dim, spec.ln_eps)

    def forward(self, ids: torch.Tensor, embed: int) -> torch.Tensor:
        n = ids.shape[1]
        x = F.embedding(ids, self.word[:, :embed]) + self.position[:n, :embed] + self.token_type[0, :embed]
        return self.ln(x)


class SuperTransformer(ProgramCache):
    """A ViT or BERT SuperNet: the spec says which; both share the elastic encoder."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.is_bert = spec.family == FAMILY_BERT
        e = spec.embed_dim
        if self.is_bert:
            self.embeddings = BertEmbeddings(spec)
        else:
            self.stem = ViTStem(spec)
        self.layers = nn.ModuleList(ElasticLayer(spec) for _ in range(spec.num_layers))
        if self.is_bert:
            self.pooler = ElasticLinear(e, e)
        else:
            self.final_ln = ElasticLayerNorm(e, spec.ln_eps)
        self.classifier = ElasticLinear(e, spec.num_classes)
        self.norm_rows: dict[str, int] = {}  # the served SubNets (LayerNorm: no statistics to look up)
        self._plans: dict[str, TransformerPlan] = {}
        self._programs: dict[str, tuple[TransformerPlan, tuple]] = {}  # ViT serving programs
        self._views: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (tensor id, sizes) -> view
        self._active = self.plan(spec.largest())

    # --- actuation -----------------------------------------------------------------------
    def config_from_id(self, subnet_id: str) -> TransformerChoice:
        return TransformerChoice.from_id(subnet_id)

    def plan(self, choice: TransformerChoice) -> TransformerPlan:
        cached = self._plans.get(choice.id)
        if cached is None:
            self.spec.validate(choice)
            idx = kept_layers(self.spec.num_layers, choice.depth)
            cached = self._plans[choice.id] = TransformerPlan(
                choice.id, choice.embed, tuple(zip(idx, choice.heads, choice.ffn)))
        return cached

    def actuate(self, choice: TransformerChoice | str) -> TransformerPlan:
        """Select the SubNet the next forward pass runs: for a planned SubNet, one dict
        lookup and one attribute store."""
        plan = self._plans.get(choice) if isinstance(choice, str) else None
        if plan is None:
            plan = self.plan(TransformerChoice.from_id(choice) if isinstance(choice, str) else choice)
        self._active = plan
        return plan

    @property
    def active(self) -> TransformerPlan:
        return self._active

    # --- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._active
        if not (self.is_bert or self.training or torch.is_grad_enabled()):
            entry = self._programs.get(p.subnet_id)
            if entry is None or entry[0] is not p:
                entry = self._compile(p)
            return _run_vit_program(entry[1], x)
        return self.forward_modular(x)

    def forward_modular(self, x: torch.Tensor) -> torch.Tensor:
        """The forward through the elastic modules (training, BERT; the reference the
        compiled program is checked and timed against)."""
        p = self._active
        if self.is_bert:
            ids = token_ids(x)
            mask = padding_mask(ids, self.spec.pad_token_id, self.embeddings.word.dtype)
            h = self.embeddings(ids, p.embed)
        else:
            mask = None
            h = self.stem(x, p.embed)
        for index, heads, ffn in p.layers:
            h = self.layers[index](h, heads, ffn, mask)
        if self.is_bert:
            return self.classifier(torch.tanh(self.pooler(h[:, 0], p.embed)), self.spec.num_classes)
        return self.classifier(self.final_ln(h).mean(dim=1), self.spec.num_classes)

    def subnet_cost(self, choice: TransformerChoice) -> tuple[int, int]:
        return subnet_cost(self.spec, choice)

    # --- compiled serving programs (ViT) -------------------------------------------------
    def prepare(self, subnet_ids: list[str] | None = None) -> int:
        """Compile the serving programs of these SubNets (default: the served ones) now
        rather than on their first forward pass. Returns the bytes the programs add (view
        headers only: no tensor data is copied). BERT runs the modular path: no programs."""
        if self.is_bert:
            return 0
        for sid in self.norm_rows if subnet_ids is None else subnet_ids:
            plan = self.plan(TransformerChoice.from_id(sid))
            entry = self._programs.get(sid)
            if entry is None or entry[0] is not plan:
                self._compile(plan)
        return self.program_bytes()

    def _compile(self, p: TransformerPlan) -> tuple[TransformerPlan, tuple]:
        """The program of one ViT SubNet: detached views of its weight slices, in the order
        ``_run_vit_program`` uses them."""
        e, stem, views = p.embed, self.stem, self._views
        with torch.inference_mode(False), torch.no_grad():
            def cut(t: torch.Tensor, *sizes: int) -> torch.Tensor:  # t.detach()[:s0, :s1], shared
                key = (id(t), sizes)
                hit = views.get(key)
                if hit is None or hit[0] is not t:
                    hit = views[key] = (t, t.detach()[tuple(slice(0, n) for n in sizes)])
                return hit[1]

            def norm(bn: nn.BatchNorm2d, c: int) -> tuple:
                return (cut(bn.weight, c), cut(bn.bias, c), cut(bn.running_mean, c), cut(bn.running_var, c), bn.eps)

            def ln(m: ElasticLayerNorm) -> tuple:
                return cut(m.weight, e), cut(m.bias, e), m.eps

            def lin(m: ElasticLinear, out: int, inp: int) -> tuple:
                return cut(m.weight, out, inp), None if m.bias is None else cut(m.bias, out)

            prog_stem = (cut(stem.conv1.weight, stem.conv1.out_channels), norm(stem.bn1, stem.bn1.num_features),
                         cut(stem.conv2_weight, e), norm(stem.bn2, e), cut(stem.pos, 1, stem.pos.shape[1], e)[0])
            layers = []
            for index, heads, ffn in p.layers:
                layer = self.layers[index]
                inner = heads * layer.head_dim
                dw = (cut(layer.dw_weight, ffn), cut(layer.dw_bias, ffn)) if layer.side else None
                layers.append((ln(layer.ln1), lin(layer.query, inner, e), lin(layer.key, inner, e),
                               lin(layer.value, inner, e), lin(layer.attn_out, e, inner), heads, layer.head_dim,
                               ln(layer.ln2), lin(layer.fc1, ffn, e), dw, layer.side, lin(layer.fc2, e, ffn)))
            head = (ln(self.final_ln), lin(self.classifier, self.spec.num_classes, e))
        entry = self._programs[p.subnet_id] = (p, (prog_stem, tuple(layers), head))
        return entry

    # --- the served set (bundle bookkeeping) ---------------------------------------------
    def norm_modules(self) -> list[tuple[str, SubnetNorm]]:
        return []

    def set_norm_rows(self, subnet_ids: list[str]) -> None:
        self.norm_rows = {sid: r for r, sid in enumerate(subnet_ids)}

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def norm_table_bytes(self) -> int:
        return 0


def _run_vit_program(prog: tuple, x: torch.Tensor) -> torch.Tensor:
    """The serving forward of one compiled ViT SubNet: the modular path's operations in its
    order, on precomputed views. The FFN's depthwise conv reads the token tensor as a
    channels-last image (a view, where the modular path transposes and copies)."""
    (w1, n1, w2, n2, pos), layers, ((lg, lb, leps), (cw, cb)) = prog
    h = F.gelu(torch.batch_norm(F.conv2d(x, w1, None, 2, 1), n1[0], n1[1], n1[2], n1[3], False, 0.0, n1[4], True))
    h = torch.batch_norm(F.conv2d(h, w2, None, 2, 1), n2[0], n2[1], n2[2], n2[3], False, 0.0, n2[4], True)
    b, e = h.shape[0], h.shape[1]
    t = h.flatten(2).transpose(1, 2) + pos
    n = t.shape[1]
    for ln1, q, k, v, o, heads, hd, ln2, fc1, dw, side, fc2 in layers:
        a = F.layer_norm(t, (e,), ln1[0], ln1[1], ln1[2])
        qh = F.linear(a, q[0], q[1]).view(b, n, heads, hd).transpose(1, 2)
        kh = F.linear(a, k[0], k[1]).view(b, n, heads, hd).transpose(1, 2)
        vh = F.linear(a, v[0], v[1]).view(b, n, heads, hd).transpose(1, 2)
        ctx = F.scaled_dot_product_attention(qh, kh, vh)
        t = t + F.linear(ctx.transpose(1, 2).reshape(b, n, heads * hd), o[0], o[1])
        f = F.gelu(F.linear(F.layer_norm(t, (e,), ln2[0], ln2[1], ln2[2]), fc1[0], fc1[1]))
        if dw is not None:
            c = f.shape[-1]
            g = F.conv2d(f.view(b, side, side, c).permute(0, 3, 1, 2), dw[0], dw[1], 1, 1, 1, c)
            f = g.permute(0, 2, 3, 1).reshape(b, n, c)
        t = t + F.linear(F.gelu(f), fc2[0], fc2[1])
    return F.linear(F.layer_norm(t, (e,), lg, lb, leps).mean(dim=1), cw, cb)


def token_ids(x: torch.Tensor) -> torch.Tensor:
    """Token ids as int64 (N x L): an INT64 request as is, or ids carried in a float32
    slab (exact below 2^24) rounded back; any extra singleton dimensions are dropped."""
    if x.dtype != torch.int64:
        x = torch.round(x).to(torch.int64)
    return x.reshape(x.shape[0], -1)


def padding_mask(ids: torch.Tensor, pad_id: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Hugging Face's extended attention mask for ids != pad (None when nothing is padded)."""
    keep = ids != pad_id
    if bool(keep.all()):
        return None
    return (~keep)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def subnet_cost(spec: TransformerSpec, choice: TransformerChoice) -> tuple[int, int]:
    """(multiply-accumulates per input, parameters) of one SubNet, counted analytically."""
    e, macs, params = choice.embed, 0, 0
    if spec.family == FAMILY_BERT:
        n = spec.seq_len
        params += (spec.vocab_size + spec.max_position + spec.type_vocab_size) * e + 2 * e
    else:
        side = spec.input_size
        side1 = (side + 2 - 3) // 2 + 1
        n = ViTStem.tokens(spec)
        macs += side1 * side1 * 9 * spec.in_channels * spec.stem_channels + n * 9 * spec.stem_channels * e
        params += 9 * spec.in_channels * spec.stem_channels + 2 * spec.stem_channels + 9 * spec.stem_channels * e
        params += 2 * e + n * e  # BatchNorm affine, position embedding
    for heads, ffn in zip(choice.heads, choice.ffn):
        inner = heads * spec.head_dim
        macs += n * (4 * e * inner + 2 * e * ffn) + 2 * n * n * inner
        params += 4 * e * inner + 3 * inner + e + 2 * e * ffn + ffn + e + 4 * e
        if spec.ffn_dwconv and spec.family != FAMILY_BERT:
            macs += n * 9 * ffn
            params += 10 * ffn
    if spec.family == FAMILY_BERT:
        macs += e * e + e * spec.num_classes
        params += e * e + e + e * spec.num_classes + spec.num_classes
    else:
        macs += e * spec.num_classes
        params += 2 * e + e * spec.num_classes + spec.num_classes
    return macs, params
