"""The paper-setting profile (OFA ResNet-50 SubNets, OFA's published accuracies, a GPU latency
model fitted to SuperServe's published throughput): shape, ranges and anchors."""
import random

import pytest

from superserve.profiling.paper_setting import (OFA_RESNET50_PUBLISHED, PAPER_ANCHORS, GpuLatencyModel,
                                                ResNetConfig, ThroughputAnchors, candidate_configs,
                                                paper_profile, published_accuracy, resnet_macs, sample_config)
from superserve.scheduling import SlackFit
from superserve.scheduling.profile import LatencyProfile
from superserve.sim import simulate
from superserve.workload import poisson


@pytest.fixture(scope="module")
def profile() -> LatencyProfile:
    return paper_profile(16, samples=4000)


def test_resnet50d_shape_counts_the_published_macs():
    # ResNet-50-D: deep stem, 3/4/6/3 blocks (base 2/2/4/2 plus 1/2/2/1), expand 0.25, full width.
    r50d = ResNetConfig((2, 1, 2, 2, 1), (0.25,) * 18, (2,) * 6, 224)
    assert 4.25e9 < resnet_macs(r50d) < 4.4e9
    # Work grows with every knob.
    smaller = [ResNetConfig((2, 1, 2, 2, 1), (0.25,) * 18, (2,) * 6, 192),
               ResNetConfig((2, 0, 2, 2, 1), (0.25,) * 18, (2,) * 6, 224),
               ResNetConfig((2, 1, 2, 2, 1), (0.2,) * 18, (2,) * 6, 224),
               ResNetConfig((2, 1, 2, 2, 1), (0.25,) * 18, (2, 2, 2, 2, 1, 2), 224)]
    assert all(resnet_macs(c) < resnet_macs(r50d) for c in smaller)


def test_ids_are_canonical():
    rng = random.Random(3)
    for _ in range(50):
        c = sample_config(rng)
        bumped = ResNetConfig(c.d, tuple(0.2 if i not in {j for st in c.active() for j in st} else x
                                         for i, x in enumerate(c.e)), c.w, c.r)
        assert bumped.canonical().id == c.id  # skipped blocks do not change the SubNet


def test_accuracy_reproduces_the_published_points_and_never_extrapolates():
    for gmacs, top1 in OFA_RESNET50_PUBLISHED:
        assert published_accuracy(gmacs) == pytest.approx(top1 / 100)
    assert 0.750 < published_accuracy(0.7) < 0.763
    with pytest.raises(ValueError):
        published_accuracy(0.5)
    with pytest.raises(ValueError):
        published_accuracy(4.5)


def test_profile_shape_ranges_and_anchors(profile):
    assert len(profile) == 16 and profile.max_batch == 16
    accs = [s.accuracy for s in profile.subnets]
    assert 0.749 <= min(accs) and max(accs) <= 0.799
    assert max(accs) - min(accs) > 0.04  # spans most of OFA's published 4.8 points
    for s in profile.subnets:
        lat = s.latency_p50_ms
        assert all(a < b for a, b in zip(lat, lat[1:]))  # P1: latency grows with the batch
        assert all(p >= q for p, q in zip(s.latency_p99_ms, lat))
    by_acc = [s.latency_p50_ms[-1] for s in profile.subnets]
    assert all(a < b for a, b in zip(by_acc, by_acc[1:]))  # P2: and with accuracy
    a = PAPER_ANCHORS
    fast, acc = profile.smallest, profile.largest
    assert a.workers * a.max_batch / (fast.latency_p50_ms[-1] / 1000) == pytest.approx(a.fastest_qps)
    assert a.workers * a.max_batch / (acc.latency_p50_ms[-1] / 1000) == pytest.approx(a.most_accurate_qps)
    assert "modelled, not measured" in profile.meta["method"]


def test_profile_round_trips_through_the_file_format(profile, tmp_path):
    profile.save(tmp_path / "p.json")
    back = LatencyProfile.load(tmp_path / "p.json")
    assert [s.id for s in back.subnets] == [s.id for s in profile.subnets]
    assert back.largest.latency_p50_ms == profile.largest.latency_p50_ms


def test_latency_model_rejects_anchors_it_cannot_fit():
    with pytest.raises(ValueError):
        GpuLatencyModel.fit(PAPER_ANCHORS, 2.0, 1.0)
    with pytest.raises(ValueError):  # the fastest would need a negative fixed cost
        GpuLatencyModel.fit(ThroughputAnchors(fastest_qps=100_000.0), 0.6, 4.1)


def test_candidates_are_seeded():
    assert list(candidate_configs(200, 1)) == list(candidate_configs(200, 1))


def test_the_simulator_runs_on_it(profile):
    # Light load on 8 workers: SlackFit serves everything with accurate SubNets.
    tr = poisson(1000.0, 1.0, seed=0)
    r = simulate(tr, profile, SlackFit(profile, num_workers=8), num_workers=8, slo_ms=36.0)
    assert r.slo_attainment == 1.0 and r.mean_accuracy > 0.79


def test_fluid_bound_of_the_paper_benchmark(profile):
    from benchmarks.paper import fluid_accuracy_bound
    # A trickle: the most accurate SubNet keeps up. Far beyond the fastest's capacity: nothing does.
    assert fluid_accuracy_bound(profile, 1.0, 8, 36.0) == profile.largest.accuracy
    assert fluid_accuracy_bound(profile, 100_000.0, 8, 36.0) is None
    # In between, a mix: at least the fastest SubNet's accuracy, below the most accurate's, and
    # falling as the rate rises.
    mids = [fluid_accuracy_bound(profile, r, 8, 36.0) for r in (3000.0, 5000.0, 7000.0)]
    assert profile.smallest.accuracy <= mids[-1] < mids[1] < mids[0] < profile.largest.accuracy
