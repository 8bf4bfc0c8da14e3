"""Offline pipeline for imported BERT SuperNets (DynaBERT format): a Hugging Face BERT
directory -> BERT SuperNet -> latency profile of this host -> a servable bundle
(`superserve import-bert`).

Which SubNets are served: those of a ``--subnets`` JSON file (ids, each with its measured
accuracy, e.g. DynaBERT's published dev-set table), or else DynaBERT's own grid: every depth
multiplier with every width multiplier, one width for all kept layers. Without measured
accuracies the profile's ``accuracy`` is a stand-in that only orders SubNets (MACs over the
largest SubNet's MACs), and the profile says so, as for imported OFA SuperNets.

There is nothing to calibrate: BERT normalises with LayerNorm (per token, no running
statistics), so the bundle's SubnetNorm file only lists the served SubNets.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from ..bundle_layout import BundleLayout
from ..scheduling.profile import LatencyProfile
from ..supernet import calibrate, save_norm_table, save_weights
from ..supernet.vit import TransformerChoice
from ..supernet.vit.bert_import import import_bert
from .measure import measure_profile
from .ofa_import import PROXY_NOTE

Progress = Callable[[str, int, int], None]


@dataclass
class BertImportSettings:
    seq_len: int = 128  # token ids per served request
    subnets: Path | None = None  # JSON list of {"id": ..., "accuracy": float}
    depth_choices: tuple[float, ...] = (0.5, 0.75, 1.0)
    width_choices: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    max_batch: int = 16
    repeats: int = 15
    threads: int = 1


def served_subnets(model, settings: BertImportSettings) -> tuple[list[TransformerChoice], dict[str, float]]:
    """(SubNets to serve, measured accuracies by id; empty without a --subnets file)."""
    spec = model.spec
    if settings.subnets is None:
        return [spec.uniform(d, h, f) for d in spec.depth_choices
                for h, f in zip(spec.head_choices, spec.ffn_choices)], {}
    rows = json.loads(Path(settings.subnets).read_text())
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{settings.subnets}: expected a non-empty JSON list of {{\"id\", \"accuracy\"}}")
    choices, accs = [], {}
    for r in rows:
        choice = TransformerChoice.from_id(r["id"])
        spec.validate(choice)
        choices.append(choice)
        if "accuracy" in r:
            accs[choice.id] = float(r["accuracy"])
    return choices, accs


def build_bert_bundle(directory: Path, out: Path, settings: BertImportSettings,
                      progress: Progress | None = None) -> dict:
    t0 = time.perf_counter()
    step = progress or (lambda *a: None)
    model = import_bert(directory, settings.seq_len, settings.depth_choices, settings.width_choices)
    choices, measured = served_subnets(model, settings)
    calibrate(model, choices, lambda: iter(()))  # LayerNorm: records the served set only
    largest_macs = max(model.subnet_cost(c)[0] for c in choices)
    accs = {c.id: {"val": measured.get(c.id, model.subnet_cost(c)[0] / largest_macs)} for c in choices}
    before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        profile = measure_profile(model, choices, accs, settings.max_batch, settings.repeats,
                                  progress=lambda i, n: step("profile", i, n))
    finally:
        torch.set_num_threads(before)
    meta = dict(profile.meta, source=str(directory), seq_len=settings.seq_len,
                accuracy_source=("measured (--subnets)" if len(measured) == len(choices) else PROXY_NOTE))
    profile = LatencyProfile(tuple(replace(s, val_accuracy=None) if s.id not in measured else s
                                   for s in profile.subnets), profile.device, meta)
    layout = BundleLayout(out)
    layout.root.mkdir(parents=True, exist_ok=True)
    save_weights(model, layout.weights, {"source": str(directory)})
    save_norm_table(model, layout.norm)
    profile.save(layout.profile)
    return {"subnets": len(choices), "seq_len": settings.seq_len, "device": profile.device,
            "accuracy_source": meta["accuracy_source"], "seconds": round(time.perf_counter() - t0, 1)}
