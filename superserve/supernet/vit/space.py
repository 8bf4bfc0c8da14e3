"""Transformer SuperNet specs (ViT and BERT families) and their SubNet control tuples.

A SubNet of a transformer is chosen as in DynaBERT, plus per-layer widths:
  depth    a depth multiplier; D = round(depth * L) layers run, the ones DynaBERT keeps:
           layer floor(i * L / D) for i in 0..D-1 (spread evenly: every other layer at 0.5,
           never "the first half")
  heads[i] attention heads of the i-th kept layer (the first heads[i]: Q/K/V rows and
           output-projection columns of those heads)
  ffn[i]   FFN neurons of the i-th kept layer (the leading rows of the first FFN matrix and
           columns of the second)
  embed    active embedding width (the leading channels; ViT only, BERT keeps its hidden size)
"""
from __future__ import annotations

import itertools
import json
import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILY_VIT = "vit"
FAMILY_BERT = "bert"
FAMILIES = (FAMILY_VIT, FAMILY_BERT)


def kept_layers(num_layers: int, depth: float) -> tuple[int, ...]:
    """DynaBERT's LayerSelect rule: the indices of the layers a depth multiplier keeps."""
    d = max(1, round(depth * num_layers))
    return tuple(i * num_layers // d for i in range(d))


@dataclass(frozen=True)
class TransformerChoice:
    """The control tuple of one transformer SubNet (see the module doc)."""

    depth: float
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    embed: int

    def __post_init__(self) -> None:
        if len(self.heads) != len(self.ffn):
            raise ValueError(f"heads {self.heads} and ffn {self.ffn} need one entry per kept layer each")
        if any(h < 1 for h in self.heads) or any(f < 1 for f in self.ffn) or self.embed < 1:
            raise ValueError("every kept layer needs at least one head and one FFN neuron")

    @property
    def id(self) -> str:
        """e.g. 'd075-e96-h3.1.2-f384.96.192'."""
        return (f"d{round(self.depth * 100):03d}-e{self.embed}-h{'.'.join(map(str, self.heads))}"
                f"-f{'.'.join(map(str, self.ffn))}")

    @classmethod
    def from_id(cls, subnet_id: str) -> "TransformerChoice":
        try:
            d, e, h, f = subnet_id.split("-")
            if (d[0], e[0], h[0], f[0]) != ("d", "e", "h", "f"):
                raise ValueError("expected d<depth>-e<embed>-h<heads>-f<ffn>")
            return cls(int(d[1:]) / 100, tuple(int(x) for x in h[1:].split(".")),
                       tuple(int(x) for x in f[1:].split(".")), int(e[1:]))
        except (ValueError, IndexError) as exc:
            raise ValueError(f"not a transformer SubNet id: {subnet_id!r} ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "heads": list(self.heads), "ffn": list(self.ffn), "embed": self.embed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerChoice":
        return cls(float(d["depth"]), tuple(d["heads"]), tuple(d["ffn"]), int(d["embed"]))


@dataclass(frozen=True)
class TransformerSpec:
    """A transformer SuperNet: encoder sizes, the input side of its family, its SubNet space.

    ViT: a conv stem (3x3/2 to ``stem_channels``, GELU, 3x3/2 to the embedding) turns an
    image into (input_size / 4)^2 tokens; pre-norm layers; final LayerNorm, mean pooling,
    linear head. BERT: word + position + token-type embeddings; post-norm layers; pooler on
    the first token; linear classifier (Hugging Face's BertForSequenceClassification).
    """

    family: str = FAMILY_VIT
    num_layers: int = 4
    embed_dim: int = 96
    num_heads: int = 3
    head_dim: int = 32
    ffn_dim: int = 288
    num_classes: int = 10
    ln_eps: float = 1e-6
    # ViT input
    in_channels: int = 1
    input_size: int = 28
    stem_channels: int = 32
    ffn_dwconv: bool = True  # a 3x3 depthwise conv inside each FFN (model.ElasticLayer.local)
    # BERT input
    vocab_size: int = 0
    max_position: int = 0
    type_vocab_size: int = 0
    seq_len: int = 0  # the length of a served request (token ids)
    pad_token_id: int = 0
    # the space
    depth_choices: tuple[float, ...] = (0.5, 0.75, 1.0)
    head_choices: tuple[int, ...] = (1, 2, 3)
    ffn_choices: tuple[int, ...] = (96, 192, 288)
    embed_choices: tuple[int, ...] = (48, 72, 96)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown transformer family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        if max(self.head_choices) > self.num_heads or max(self.ffn_choices) > self.ffn_dim:
            raise ValueError("head and FFN choices must not exceed the SuperNet's sizes")
        if max(self.embed_choices) > self.embed_dim:
            raise ValueError("embedding choices must not exceed embed_dim")
        if self.family == FAMILY_BERT and self.embed_choices != (self.embed_dim,):
            raise ValueError("BERT keeps its hidden size: embed_choices must be (embed_dim,)")

    # --- the search space --------------------------------------------------------------
    def depth_of(self, depth: float) -> int:
        return len(kept_layers(self.num_layers, depth))

    def largest(self) -> TransformerChoice:
        d = self.depth_of(max(self.depth_choices))
        return TransformerChoice(max(self.depth_choices), (max(self.head_choices),) * d,
                                 (max(self.ffn_choices),) * d, max(self.embed_choices))

    def smallest(self) -> TransformerChoice:
        d = self.depth_of(min(self.depth_choices))
        return TransformerChoice(min(self.depth_choices), (min(self.head_choices),) * d,
                                 (min(self.ffn_choices),) * d, min(self.embed_choices))

    def uniform(self, depth: float, heads: int, ffn: int, embed: int | None = None) -> TransformerChoice:
        """DynaBERT's SubNets: one width for every kept layer."""
        d = self.depth_of(depth)
        return TransformerChoice(depth, (heads,) * d, (ffn,) * d, embed or max(self.embed_choices))

    def space_size(self) -> int:
        per_layer = len(self.head_choices) * len(self.ffn_choices)
        return len(self.embed_choices) * sum(per_layer ** self.depth_of(d) for d in self.depth_choices)

    def sample(self, rng: random.Random) -> TransformerChoice:
        depth = rng.choice(self.depth_choices)
        d = self.depth_of(depth)
        return TransformerChoice(depth, tuple(rng.choice(self.head_choices) for _ in range(d)),
                                 tuple(rng.choice(self.ffn_choices) for _ in range(d)),
                                 rng.choice(self.embed_choices))

    def mutate(self, choice: TransformerChoice, rng: random.Random) -> TransformerChoice:
        """One change: the depth (widths of layers kept at both depths stay), one layer's
        heads or FFN width, or the embedding width."""
        what = rng.choice([k for k, n in (("depth", len(self.depth_choices)), ("heads", len(self.head_choices)),
                                          ("ffn", len(self.ffn_choices)), ("embed", len(self.embed_choices)))
                           if n > 1] or ["none"])
        heads, ffn, depth, embed = list(choice.heads), list(choice.ffn), choice.depth, choice.embed
        i = rng.randrange(len(heads))
        if what == "depth":
            depth = rng.choice([d for d in self.depth_choices if d != depth])
            n = self.depth_of(depth)
            heads = (heads + [rng.choice(self.head_choices) for _ in range(n)])[:n]
            ffn = (ffn + [rng.choice(self.ffn_choices) for _ in range(n)])[:n]
        elif what == "heads":
            heads[i] = rng.choice([h for h in self.head_choices if h != heads[i]])
        elif what == "ffn":
            ffn[i] = rng.choice([f for f in self.ffn_choices if f != ffn[i]])
        elif what == "embed":
            embed = rng.choice([e for e in self.embed_choices if e != embed])
        return TransformerChoice(depth, tuple(heads), tuple(ffn), embed)

    def enumerate(self):
        """Every SubNet of the space (check space_size() first)."""
        per_layer = list(itertools.product(self.head_choices, self.ffn_choices))
        for embed in self.embed_choices:
            for depth in self.depth_choices:
                for combo in itertools.product(per_layer, repeat=self.depth_of(depth)):
                    yield TransformerChoice(depth, tuple(h for h, _ in combo), tuple(f for _, f in combo), embed)

    def validate(self, choice: TransformerChoice) -> None:
        """Raise ValueError naming the offending field if ``choice`` is not in this space."""
        if choice.depth not in self.depth_choices:
            raise ValueError(f"depth {choice.depth} not in {self.depth_choices}")
        n = self.depth_of(choice.depth)
        if len(choice.heads) != n:
            raise ValueError(f"depth {choice.depth} keeps {n} of {self.num_layers} layers; got {len(choice.heads)} "
                             "per-layer widths")
        if any(h not in self.head_choices for h in choice.heads):
            raise ValueError(f"heads {choice.heads}: each must be one of {self.head_choices}")
        if any(f not in self.ffn_choices for f in choice.ffn):
            raise ValueError(f"ffn {choice.ffn}: each must be one of {self.ffn_choices}")
        if choice.embed not in self.embed_choices:
            raise ValueError(f"embed {choice.embed} not in {self.embed_choices}")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerSpec":
        if d.get("family") not in FAMILIES:
            raise ValueError(f"not a transformer spec (family {d.get('family')!r})")
        known = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


VIT_SPACE_KEYS = ("depth_choices", "head_choices", "ffn_choices", "embed_choices")


def fashion_mnist_vit_spec(space_file: str = "") -> TransformerSpec:
    """The embedded ViT SuperNet: 28x28 grayscale -> 7x7 tokens, 10 classes. Its space goes
    down to one layer of one head, 48 FFN neurons and a 32-channel embedding. ``space_file``
    (JSON, or TOML by the suffix) may set other choices within the same sizes, e.g. the first
    stage of progressive shrinking (superserve/data/spaces/vit_stage1.json)."""
    spec = TransformerSpec(depth_choices=(0.25, 0.5, 0.75, 1.0), ffn_choices=(48, 96, 192, 288),
                           embed_choices=(32, 48, 72, 96))
    if not space_file:
        return spec
    text = Path(space_file).read_text()
    d = tomllib.loads(text) if space_file.endswith(".toml") else json.loads(text)
    if not isinstance(d, dict) or set(d) - set(VIT_SPACE_KEYS):
        raise ValueError(f"{space_file}: a ViT space file sets only {', '.join(VIT_SPACE_KEYS)}")
    for key, v in d.items():
        ok = isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0
                                               for x in v)
        if not ok or (key == "depth_choices" and max(v) > 1) or (key != "depth_choices" and
                                                                   any(isinstance(x, float) for x in v)):
            raise ValueError(f"{space_file}: {key} must be a non-empty list of "
                             + ("multipliers in (0, 1]" if key == "depth_choices" else "positive integers"))
    return TransformerSpec.from_dict({**spec.to_dict(), **d})


def bert_spec(config: dict[str, Any], seq_len: int = 128, depth_choices: tuple[float, ...] = (0.5, 0.75, 1.0),
              width_choices: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)) -> TransformerSpec:
    """The spec of a Hugging Face BERT ``config.json`` (dict), with DynaBERT's width
    multipliers turned into head counts and FFN widths."""
    heads, hidden, inter = int(config["num_attention_heads"]), int(config["hidden_size"]), int(config["intermediate_size"])
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    return TransformerSpec(
        family=FAMILY_BERT, num_layers=int(config["num_hidden_layers"]), embed_dim=hidden, num_heads=heads,
        head_dim=hidden // heads, ffn_dim=inter,
        num_classes=int(config.get("num_labels") or len(config.get("id2label") or {}) or 2),
        ln_eps=float(config.get("layer_norm_eps", 1e-12)), in_channels=1, input_size=seq_len, stem_channels=0,
        ffn_dwconv=False,
        vocab_size=int(config["vocab_size"]), max_position=int(config["max_position_embeddings"]),
        type_vocab_size=int(config.get("type_vocab_size", 2)), seq_len=seq_len,
        pad_token_id=int(config.get("pad_token_id") or 0),
        depth_choices=tuple(depth_choices),
        head_choices=tuple(sorted({max(1, math.ceil(w * heads - 1e-9)) for w in width_choices})),
        ffn_choices=tuple(sorted({max(1, math.ceil(w * inter - 1e-9)) for w in width_choices})),
        embed_choices=(hidden,),
    )
