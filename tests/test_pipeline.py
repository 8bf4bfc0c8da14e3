"""The offline pipeline end to end on a tiny SuperNet: train -> search -> bundle -> load and serve."""
from __future__ import annotations

import json

import pytest
import torch

from superserve.datasets import DEFAULT_FMNIST, normalize
from superserve.embedded import load_bundle
from superserve.profiling.accuracy import top1_correct
from superserve.profiling.pipeline import BuildSettings, build_bundle
from superserve.supernet import SubNetConfig
from superserve.supernet.config import SuperNetSpec
from superserve.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not DEFAULT_FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist "
                                "(make test installs it)")
TINY = SuperNetSpec(stem_channels=8, stage_channels=(8, 16), stage_strides=(1, 2), depth_choices=(1, 2),
                    expand_choices=(0.25, 0.5), width_choices=(0.5, 1.0))


def test_train_search_bundle_round_trip(tmp_path):
    weights = train(TrainConfig(out=str(tmp_path / "train"), epochs=1, limit=512, batch_size=64, threads=1),
                    TINY, show_progress=False)
    settings = BuildSettings(initial=6, generations=1, per_generation=3, search_val_images=300,
                             calib_images=256, subset_images=64)
    report = tmp_path / "report.json"
    summary = build_bundle(weights, tmp_path / "bundle", settings, report)

    assert json.loads(report.read_text()) == summary
    assert summary["search_space_size"] == TINY.space_size() == 2 * (2 + 4) ** 2
    assert summary["search"]["evaluated"] == len(summary["candidates"]) >= 8
    served = [s["id"] for s in summary["subnets"]]
    assert len(served) == summary["pareto_size"] >= 1
    # The space's largest SubNet is always reported, served or not, with real accuracies.
    top = summary["space_largest"]
    assert top["id"] == TINY.largest().id and top["served"] == (top["id"] in served)
    assert 0.0 <= top["test_accuracy"] <= 1.0 and 0.0 <= top["val_accuracy"] <= 1.0

    bundle = load_bundle(tmp_path / "bundle")
    assert sorted(s.id for s in bundle.profile.subnets) == sorted(served)
    assert sorted(bundle.model.norm_rows) == sorted(served)  # only the served set ships statistics
    assert bundle.profile.max_batch == 16
    for s in bundle.profile.subnets:  # latency tables are measured, positive, one per batch size
        assert len(s.latency_p50_ms) == 16 and all(v > 0 for v in s.latency_p50_ms)
    # The shipped subset is real test images with the accuracy the bundle stores for them.
    subset = bundle.subset()
    stored = json.loads((tmp_path / "bundle" / "subset_accuracy.json").read_text())
    assert len(subset) == stored["images"] == 64
    assert top1_correct(bundle.model, served[0], subset) == stored["correct"][served[0]]
    with torch.inference_mode():
        bundle.model.actuate(SubNetConfig.from_id(served[-1]))
        assert bundle.model(normalize(subset.images[:4])).shape == (4, 10)
