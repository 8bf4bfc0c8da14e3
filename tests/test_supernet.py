"""SubNetAct operators and the SuperNet family: equivalence with extracted models, zero-cost
actuation, search space, checkpoints."""
from __future__ import annotations

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from superserve.supernet import (
    CheckpointError, SubNetConfig, SuperNetSpec, SuperResNet, calibrate, extract, fashion_mnist_spec,
    imagenet_resnet50_spec, load_extracted, load_supernet, save_extracted, save_norm_table, save_weights,
    subnet_cost,
)
from superserve.supernet.ops import LayerSelect, SlicedConv2d, SlicedLinear, SubnetNorm

SPEC = fashion_mnist_spec()


def randomized_supernet(seed: int = 0) -> SuperResNet:
    """Random weights everywhere (the zero-init of the last norm would hide bugs)."""
    torch.manual_seed(seed)
    model = SuperResNet(SPEC)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3 if p.ndim > 1 else 1.0)
    return model


@pytest.fixture(scope="module")
def calibrated():
    model = randomized_supernet()
    rng = random.Random(1)
    configs = [SPEC.largest(), SPEC.smallest()] + [SPEC.sample(rng) for _ in range(50)]
    data = [torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    calibrate(model, configs, lambda: iter(data))
    return model.eval(), configs


# --- operators on their own ---------------------------------------------------------------
def test_weight_slice_conv_is_prefix_of_full_kernel():
    conv = SlicedConv2d(8, 16, 3)
    x = torch.randn(2, 5, 9, 9)
    y = conv(x, 6)
    ref = torch.nn.functional.conv2d(x, conv.weight.detach()[:6, :5].clone(), padding=1)
    assert y.shape == (2, 6, 9, 9)
    assert torch.allclose(y, ref, atol=1e-6)


def test_weight_slice_linear_uses_leading_inputs():
    lin = SlicedLinear(10, 3)
    x = torch.randn(4, 7)
    assert torch.allclose(lin(x), x @ lin.weight[:, :7].T + lin.bias, atol=1e-6)


def test_subnet_norm_looks_up_its_row_and_slices_affine():
    norm = SubnetNorm(6).eval()
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    rows = [(torch.full((4,), 1.0), torch.full((4,), 4.0)), None, (torch.zeros(6), torch.ones(6))]
    norm.set_table(rows)
    x = torch.randn(3, 4, 5, 5)
    expect = (x - 1.0) / torch.sqrt(torch.tensor(4.0 + norm.eps)) * torch.arange(1.0, 5.0)[None, :, None, None]
    assert torch.allclose(norm(x, 0), expect, atol=1e-5)
    with pytest.raises(RuntimeError, match="no statistics"):
        norm(x, 1)  # that SubNet skips this layer


def test_layer_select_runs_only_the_first_blocks():
    calls = []

    class Tag(torch.nn.Module):
        def __init__(self, i):
            super().__init__()
            self.i = i

        def forward(self, x, k):
            calls.append(self.i)
            return x + k

    stage = LayerSelect([Tag(i) for i in range(4)])
    out = stage(torch.zeros(1), 2, [(10,), (100,)])
    assert calls == [0, 1] and out.item() == 110


# --- SuperNet vs extracted models ---------------------------------------------------------
def test_actuated_supernet_equals_extracted_model(calibrated):
    model, configs = calibrated
    assert len(configs) >= 52
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        for config in configs:
            model.actuate(config)
            diff = (model(x) - extract(model, config)(x)).abs().max().item()
            assert diff <= 1e-5, f"{config.id}: max abs diff {diff}"


def test_alternating_subnets_batch_by_batch(calibrated):
    model, configs = calibrated
    rng = random.Random(3)
    extracted = {c.id: extract(model, c) for c in configs[:12]}
    with torch.inference_mode():
        for i in range(60):
            config = rng.choice(configs[:12])
            x = torch.randn(rng.randint(1, 8), 1, 28, 28)
            model.actuate(config.id if i % 2 else config)  # by id or by config
            assert (model(x) - extracted[config.id](x)).abs().max().item() <= 1e-5


def test_extracted_model_round_trips_through_safetensors(calibrated, tmp_path):
    model, configs = calibrated
    ext = extract(model, configs[5])
    save_extracted(ext, tmp_path / "sub.safetensors")
    loaded = load_extracted(tmp_path / "sub.safetensors")
    x = torch.randn(3, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(ext(x), loaded(x))
    assert sum(p.numel() for p in ext.parameters()) == subnet_cost(SPEC, configs[5])[1]


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_actuation_touches_no_tensor(calibrated):
    model, configs = calibrated
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    bufs = {n: b.data_ptr() for n, b in model.named_buffers()}
    with _RecordOps() as rec:
        for config in configs:  # first actuation builds the plan; it must not touch tensors either
            model.actuate(config)
        for config in configs:
            model.actuate(config)
    assert rec.ops == [], f"actuation ran tensor ops: {rec.ops[:5]}"
    assert ptrs == {n: p.data_ptr() for n, p in model.named_parameters()}
    assert bufs == {n: b.data_ptr() for n, b in model.named_buffers()}


def test_uncalibrated_subnet_is_refused_with_a_clear_error(calibrated):
    model, configs = calibrated
    unknown = next(c for c in SPEC.enumerate() if c.id not in model.norm_rows)
    model.actuate(unknown)
    with pytest.raises(RuntimeError, match="calibrate"):
        model(torch.randn(1, 1, 28, 28))
    model.actuate(configs[0])


def test_borrowed_statistics_differ_from_own(calibrated):
    model, configs = calibrated
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        model.actuate(SPEC.smallest())
        own = model(x)
        model.actuate(SPEC.smallest(), stats_of=SPEC.largest())
        borrowed = model(x)
    assert not torch.allclose(own, borrowed)


# --- search space -------------------------------------------------------------------------
def test_search_space_enumeration_matches_its_size():
    tiny = SuperNetSpec(stage_channels=(8, 16), stage_strides=(2, 2), depth_choices=(1, 2),
                        expand_choices=(0.25, 0.5), width_choices=(0.5, 1.0))
    configs = list(tiny.enumerate())
    assert len(configs) == tiny.space_size() == 2 * (2 + 4) ** 2
    assert len({c.id for c in configs}) == len(configs)
    for c in configs:
        assert SubNetConfig.from_id(c.id) == c


def test_ids_are_stable_and_readable():
    assert SPEC.smallest().id == "w025-d111-e25.25.25"
    assert SubNetConfig.from_id(SPEC.largest().id) == SPEC.largest()
    assert SPEC.space_size() == 4 * 120 ** 3
    with pytest.raises(ValueError):
        SubNetConfig.from_id("not-an-id")
    with pytest.raises(ValueError, match="depth"):
        SPEC.validate(SubNetConfig((5, 1, 1), ((0.25,) * 5, (0.25,), (0.25,)), 0.5))


def test_costs_grow_from_smallest_to_largest():
    small, large = subnet_cost(SPEC, SPEC.smallest()), subnet_cost(SPEC, SPEC.largest())
    assert large[0] > 20 * small[0] and large[1] > 20 * small[1]
    assert large[1] == sum(p.numel() for p in SuperResNet(SPEC).parameters())


def test_imagenet_sized_instance_builds_and_runs():
    spec = imagenet_resnet50_spec()
    model = SuperResNet(spec)
    assert 30e6 < sum(p.numel() for p in model.parameters()) < 60e6  # OFA-ResNet50 scale
    calibrate(model, [spec.smallest()], lambda: iter([torch.randn(2, 3, 224, 224)]))
    model.eval().actuate(spec.smallest())
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


# --- checkpoints --------------------------------------------------------------------------
def test_checkpoint_round_trip(calibrated, tmp_path):
    model, configs = calibrated
    save_weights(model, tmp_path / "w.safetensors")
    save_norm_table(model, tmp_path / "n.safetensors")
    loaded = load_supernet(tmp_path / "w.safetensors", tmp_path / "n.safetensors")
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        for config in configs[:5]:
            model.actuate(config)
            loaded.actuate(config)
            assert torch.equal(model(x), loaded(x))


def test_checkpoint_errors_name_the_problem(calibrated, tmp_path):
    model, _ = calibrated
    with pytest.raises(CheckpointError, match="not found"):
        load_supernet(tmp_path / "missing.safetensors")
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_supernet(tmp_path / "trunc.safetensors")
    with pytest.raises(CheckpointError, match="format"):
        load_extracted(path)  # a SuperNet file is not an extracted SubNet
    other = SuperResNet(SuperNetSpec(stage_channels=(48, 96, 200)))
    save_weights(other, tmp_path / "other.safetensors")
    from superserve.supernet.checkpoint import load_into, read_safetensors

    tensors, _ = read_safetensors(tmp_path / "other.safetensors", "superserve-supernet/1")
    with pytest.raises(CheckpointError, match=r"classifier.weight. has shape \(10, 200\)"):
        load_into(model, tensors, "other.safetensors", {k for k in tensors})
    del tensors["classifier.bias"]
    with pytest.raises(CheckpointError, match="missing key 'classifier.bias'"):
        load_into(model, tensors, "other.safetensors", {k for k in tensors} | {"classifier.bias"})


def test_compiled_serving_forward_equals_modular_path_and_copies_no_weight(calibrated):
    model, configs = calibrated
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    model.prepare([c.id for c in configs[:10]])
    storages = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    for _, _, prog in model._programs.values():
        stack = [prog]
        while stack:
            item = stack.pop()
            if isinstance(item, tuple):
                stack.extend(item)
            elif isinstance(item, torch.Tensor):  # a view into the SuperNet's own tensors
                assert item.untyped_storage().data_ptr() in storages
    assert 0 < model.program_bytes() < 60_000 * len(model._programs)  # headers, not weights
    for config in configs[:10]:
        model.actuate(config)
        with torch.inference_mode():
            fast = model(x)
        modular = model(x).detach()  # autograd on: the operator path
        assert (fast - modular).abs().max().item() <= 1e-6, config.id


def test_compiled_programs_follow_a_replaced_norm_table(calibrated):
    model, configs = calibrated
    config = configs[0]
    model.actuate(config)
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        before = model(x)
    norm = model.stem_bn
    saved = (norm.stats.clone(), list(norm._offsets))
    try:
        norm.stats = norm.stats * 2.0  # a new table tensor, as set_table/loading install
        norm.sync_offsets()
        with torch.inference_mode():
            after = model(x)
        assert not torch.allclose(before, after)
        assert (after - model(x).detach()).abs().max().item() <= 1e-6
    finally:
        norm.stats = saved[0]
        norm.sync_offsets()
    with torch.inference_mode():
        assert torch.allclose(model(x), before)
