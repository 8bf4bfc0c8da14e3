"""OFA import: superserve's SubNetAct SuperNets (LayerSelect, WeightSlice, elastic kernels,
squeeze-excite, h-swish, SubnetNorm) equal MIT Han Lab's `ofa` package, the reference.

The reference builds OFA's published SuperNets with random weights (benchmarks/_ofa_reference.py);
each is written as an OFA-format checkpoint (legacy key spelling) and imported. For the
smallest, the largest and 20 seeded random SubNets (two input resolutions), superserve's
output must equal `ofa`'s ``set_active_subnet`` forward and its ``get_active_subnet()``
extraction within 1e-4, with BatchNorm statistics recalibrated from the same batch on both
sides (`ofa`: its ``set_running_statistics``; superserve: SubnetNorm calibration). Compared in
float64: in float32 random networks amplify rounding past 1e-4 in the reference itself (see
``equivalence``). Small inputs keep it fast.
"""
from __future__ import annotations

import json
import random

import pytest
import torch

from benchmarks._ofa_reference import equivalence, reference_net, write_checkpoint
from superserve.profiling.ofa_import import OFAImportSettings, load_images, served_subnets
from superserve.supernet import CheckpointError
from superserve.supernet.ofa.importer import import_checkpoint
from superserve.supernet.ofa.models import build_ofa, ofa_spec

TOLERANCE = 1e-4


@pytest.mark.parametrize("arch", ["resnet50", "mbv3-w1.0"])
def test_equals_the_ofa_reference(arch, tmp_path):
    torch.set_num_threads(1)
    result = equivalence(arch, tmp_path)
    assert result["subnets_checked"] >= 22
    assert result["max_abs_output"] > 0.1  # the outputs compared are not all near zero
    for against, diff in result["max_abs_diff"].items():
        assert diff <= TOLERANCE, f"{arch}: {against} differs by {diff}"


@pytest.mark.parametrize("arch", ["resnet50", "mbv3-w1.0", "proxyless"])
def test_every_key_spelling_imports_the_same(arch, tmp_path):
    net = reference_net(arch, n_classes=10)
    kept = {k for k in net.state_dict() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert set(build_ofa(ofa_spec(arch, 10)).ofa_names().values()) == kept  # every tensor, once
    write_checkpoint(net, tmp_path / "current.pth")
    write_checkpoint(net, tmp_path / "legacy.pth", legacy=True)
    legacy_keys = set(torch.load(tmp_path / "legacy.pth")["state_dict"])
    assert legacy_keys != set(net.state_dict())
    current = import_checkpoint(tmp_path / "current.pth", arch).state_dict()
    old = import_checkpoint(tmp_path / "legacy.pth", arch).state_dict()
    assert current.keys() == old.keys() and all(torch.equal(current[k], old[k]) for k in current)


def test_wrong_architecture_and_pickled_code_are_refused(tmp_path):
    write_checkpoint(reference_net("mbv3-w1.0", n_classes=10), tmp_path / "mbv3.pth")
    with pytest.raises(CheckpointError, match="--arch resnet50"):
        import_checkpoint(tmp_path / "mbv3.pth", "resnet50")
    torch.save({"state_dict": {"x": torch.zeros(1)}, "code": random.Random()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="plain tensors"):
        import_checkpoint(tmp_path / "pickled.pth", "mbv3-w1.0")
    with pytest.raises(CheckpointError, match="not found"):
        import_checkpoint(tmp_path / "absent.pth", "mbv3-w1.0")
    with pytest.raises(ValueError, match="unknown OFA architecture"):
        ofa_spec("vgg16")


@pytest.mark.parametrize("arch", ["resnet50", "mbv3-w1.0", "mbv3-w1.2", "proxyless"])
def test_subnet_ids_round_trip_and_actuation_is_a_plan_swap(arch):
    model = build_ofa(ofa_spec(arch, 10, 64, (48, 64)))
    space, rng = model.space, random.Random(1)
    for c in [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(30)]:
        assert space.from_id(c.id) == c
        assert model.actuate(c.id) is model.actuate(c)  # the cached plan: no recomputation, no copies
    with pytest.raises(ValueError, match="SubNet id"):
        space.from_id("ofa-r50-d9-e-w-r1" if arch == "resnet50" else "ofa-mb-k1-e1-d1-r1")


def test_served_subnets_from_a_file_with_accuracies(tmp_path):
    model = build_ofa(ofa_spec("mbv3-w1.0", 10, 32))
    largest = model.space.largest()
    rows = [{"config": model.space.smallest().ofa_arguments(), "r": 32, "accuracy": 0.70},
            {"id": largest.id, "accuracy": 0.77}]
    (tmp_path / "subnets.json").write_text(json.dumps(rows))
    settings = OFAImportSettings(arch="mbv3-w1.0", images=tmp_path, subnets=tmp_path / "subnets.json", input_size=32)
    configs, accs = served_subnets(model, settings)
    assert [c.id for c in configs] == [model.space.smallest().id, largest.id]
    assert accs == {model.space.smallest().id: 0.70, largest.id: 0.77}
    (tmp_path / "subnets.json").write_text(json.dumps([dict(rows[1], accuracy=77.0)]))
    with pytest.raises(ValueError, match="not a fraction"):
        served_subnets(model, settings)
    (tmp_path / "subnets.json").write_text(json.dumps([{"config": {"ks": [3]}, "accuracy": 0.5}]))
    with pytest.raises(ValueError, match="entry 0"):
        served_subnets(model, settings)
    with pytest.raises(FileNotFoundError, match="no images"):
        load_images(tmp_path, 32, 4)


def test_uncalibrated_subnet_is_refused():
    model = build_ofa(ofa_spec("mbv3-w1.0", 10, 32)).eval()
    with pytest.raises(RuntimeError, match="no SubnetNorm statistics"):
        model(torch.zeros(1, 3, 32, 32))
