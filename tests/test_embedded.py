"""The embedded default bundle: trained weights, SubnetNorm table, Pareto set, profile, subset."""
from __future__ import annotations

import json

import pytest
import torch

from superserve.datasets import normalize
from superserve.embedded import EMBEDDED_DIR, load_bundle
from superserve.profiling.accuracy import top1_correct
from superserve.profiling.measure import check_properties
from superserve.supernet import SubNetConfig


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


def test_bundle_is_small_and_complete():
    names = {p.name for p in EMBEDDED_DIR.iterdir()}
    assert {"weights.safetensors", "subnetnorm.safetensors", "profile.json", "subset.safetensors"} <= names
    total = sum(p.stat().st_size for p in EMBEDDED_DIR.iterdir())
    assert total < 16 * 2 ** 20, f"embedded bundle is {total / 2**20:.1f} MiB"


def test_pareto_set_is_a_real_trade_off(bundle):
    # The targets, checked on the shipped bundle (a worse or uncalibrated one fails):
    # largest SubNet >= 92.0 % test accuracy, >= 30 SubNets, a span of >= 4 points.
    subs = bundle.profile.subnets
    assert len(subs) >= 30
    largest = max(subs, key=lambda s: s.flops)
    assert largest.id == bundle.model.spec.largest().id and largest.test_accuracy >= 0.92
    accs = [s.test_accuracy for s in subs]
    assert max(accs) - min(accs) >= 0.04
    for s in subs:  # every served SubNet is in the space, calibrated, and fully described
        bundle.model.spec.validate(SubNetConfig.from_id(s.id))
        assert s.id in bundle.model.norm_rows
        assert s.flops > 0 and s.params > 0 and s.val_accuracy is not None


def test_profile_describes_how_it_was_measured(bundle):
    prof = bundle.profile
    assert prof.max_batch == 16
    for key in ("torch", "threads", "date", "method"):
        assert key in prof.meta
    props = check_properties(prof)
    assert props["p1_batch_monotone_fraction"] > 0.8  # P1: latency grows with batch size
    assert props["p2_accuracy_monotone_fraction"] > 0.85  # P2: ... and with accuracy
    # the shipped profile's figure (0.089 measured), not a timing run: <= 1/8 is the target
    assert props["smallest_over_largest_at_max_batch"] <= 1 / 8


def test_subset_accuracy_reproduces_exactly(bundle):
    stored = json.loads((EMBEDDED_DIR / "subset_accuracy.json").read_text())
    subset = bundle.subset()
    assert len(subset) == stored["images"] == 2000
    ids = [s.id for s in bundle.profile.subnets]
    for sid in [ids[0], ids[len(ids) // 4], ids[len(ids) // 2], ids[3 * len(ids) // 4], ids[-1]]:
        assert top1_correct(bundle.model, sid, subset) == stored["correct"][sid]


def test_subnetnorm_matters_for_the_smallest_subnet(bundle):
    subset = bundle.subset()
    model = bundle.model
    smallest = min(bundle.configs(), key=lambda c: bundle.profile.by_id(c.id).flops)
    largest = max(bundle.configs(), key=lambda c: bundle.profile.by_id(c.id).flops)
    x, y = normalize(subset.images), subset.labels
    with torch.inference_mode():
        model.actuate(smallest)
        own = (model(x).argmax(1) == y).float().mean().item()
        model.actuate(smallest, stats_of=largest)
        borrowed = (model(x).argmax(1) == y).float().mean().item()
    assert own > borrowed + 0.10, (own, borrowed)
