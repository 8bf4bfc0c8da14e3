"""Transformer SuperNets (superserve/supernet/vit): DynaBERT's depth rule, actuation as a plan
swap that touches no tensor, and extracted plain SubNets equal to the actuated SuperNet."""
from __future__ import annotations

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from superserve.bundle_layout import EMBEDDED_DIR, BundleLayout
from superserve.datasets import DEFAULT_FMNIST
from superserve.supernet import load_supernet
from superserve.supernet.vit import SuperTransformer, TransformerChoice, TransformerSpec, kept_layers
from superserve.supernet.vit.extract import extract

TINY = TransformerSpec(num_layers=4, embed_dim=24, num_heads=3, head_dim=8, ffn_dim=32, stem_channels=8,
                       head_choices=(1, 2, 3), ffn_choices=(8, 32), embed_choices=(16, 24))


def test_dynabert_depth_rule_spreads_kept_layers():
    assert kept_layers(12, 0.5) == (0, 2, 4, 6, 8, 10)  # every other layer, not the first half
    assert kept_layers(12, 0.75) == (0, 1, 2, 4, 5, 6, 8, 9, 10)  # DynaBERT's floor(i / 0.75)
    assert kept_layers(12, 1.0) == tuple(range(12))
    assert kept_layers(4, 0.5) == (0, 2)
    assert kept_layers(6, 0.5) == (0, 2, 4)


def test_ids_round_trip_and_validation():
    rng = random.Random(0)
    for _ in range(20):
        c = TINY.sample(rng)
        assert TransformerChoice.from_id(c.id) == c
        TINY.validate(c)
        TINY.validate(TINY.mutate(c, rng))
    with pytest.raises(ValueError, match="keeps 2 of 4"):
        TINY.validate(TransformerChoice(0.5, (1, 1, 1), (8, 8, 8), 24))
    with pytest.raises(ValueError, match="heads"):
        TINY.validate(TransformerChoice(0.5, (4, 1), (8, 8), 24))
    assert sum(1 for _ in TINY.enumerate()) == TINY.space_size()


def _random_model(spec: TransformerSpec) -> SuperTransformer:
    torch.manual_seed(0)
    model = SuperTransformer(spec)
    with torch.no_grad():  # non-trivial LayerNorm affines and biases (their init is 1 / 0)
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln" in name or "final_ln" in name or ".bn" in name:
                p.add_(torch.randn_like(p) * 0.1)
        for name, b in model.named_buffers():  # the stem's BatchNorm running statistics
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return model.eval()


@torch.no_grad()
def test_every_subnet_of_a_small_space_equals_its_extracted_model():
    model = _random_model(TINY)
    x = torch.randn(3, 1, 28, 28)
    worst = 0.0
    for i, choice in enumerate(TINY.enumerate()):  # 2 embeds x (6^2 + 6^3 + 6^4) SubNets: every 17th
        if i % 17 and choice not in (TINY.largest(), TINY.smallest()):
            continue
        model.actuate(choice)
        dynamic = model(x)
        plain = extract(model, choice)
        worst = max(worst, float((plain(x) - dynamic).abs().max()))
        assert sum(p.numel() for p in plain.parameters()) == model.subnet_cost(choice)[1]
    assert worst < 1e-5


def test_actuation_touches_no_tensor():
    model = _random_model(TINY)
    choices = [TINY.largest(), TINY.smallest(), TINY.sample(random.Random(1))]
    for c in choices:
        model.actuate(c)  # plans built once (what prepare does for served SubNets)
    before = {n: (p.data_ptr(), p._version) for n, p in model.named_parameters()}

    class Recorder(TorchDispatchMode):
        ops: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    with Recorder() as rec:
        for c in choices * 3:
            plan = model.actuate(c.id)
            assert model.active is plan and plan.subnet_id == c.id
    assert rec.ops == []  # no tensor operation at all
    assert {n: (p.data_ptr(), p._version) for n, p in model.named_parameters()} == before


def test_serving_program_equals_the_modular_path_and_copies_no_weight():
    """Eval without autograd runs the compiled program: the modular path's result, on views
    of the SuperNet's own storage (an in-place weight update shows through)."""
    model = _random_model(TINY)
    rng = random.Random(2)
    choices = [TINY.largest(), TINY.smallest()] + [TINY.sample(rng) for _ in range(10)]
    added = model.prepare([c.id for c in choices])
    assert 0 < added < 720 * 60 * len(choices)  # view headers only, shared across programs
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    for _, prog in model._programs.values():
        for t in _tensors(prog):
            assert t.untyped_storage().data_ptr() in storages
    x = torch.randn(3, 1, 28, 28)
    for c in choices:
        model.actuate(c)
        modular = model(x)  # autograd on: the modular path
        with torch.inference_mode():
            assert torch.allclose(model(x), modular, atol=1e-6, rtol=0), c.id
    with torch.no_grad():
        model.layers[0].fc2.bias.add_(1.0)
        changed = model(x)
    assert torch.allclose(changed, model(x), atol=1e-6, rtol=0)


def _tensors(item):
    if isinstance(item, tuple):
        for sub in item:
            yield from _tensors(sub)
    elif isinstance(item, torch.Tensor):
        yield item


def test_depth_selects_the_spread_layers():
    """A SubNet at depth 0.5 runs layers 0 and 2: changing layer 1 or 3 does not change it."""
    model = _random_model(TINY)
    c = TINY.uniform(0.5, 2, 32, 24)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        model.actuate(c)
        ref = model(x)
        for i in (1, 3):
            model.layers[i].fc1.weight.add_(1.0)
        assert torch.equal(model(x), ref)
        model.layers[2].fc1.weight.add_(1.0)
        assert not torch.allclose(model(x), ref)


def test_training_step_reaches_every_active_weight():
    """Gradients flow into exactly the slices a SubNet uses (WeightSlice is a view)."""
    model = _random_model(TINY).train()
    c = TransformerChoice(0.5, (1, 2), (8, 32), 16)
    model.actuate(c)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    q0 = model.layers[0].query.weight.grad
    assert q0[:8, :16].abs().sum() > 0 and q0[8:].abs().sum() == 0 and q0[:, 16:].abs().sum() == 0
    assert model.layers[1].query.weight.grad is None  # layer 1 is skipped at depth 0.5
    f2 = model.layers[2].fc1.weight.grad
    assert f2[:32, :16].abs().sum() > 0 and f2[:, 16:].abs().sum() == 0


VIT_BUNDLE = BundleLayout(EMBEDDED_DIR.parent / "embedded_vit")


@pytest.mark.skipif(not VIT_BUNDLE.weights.exists(), reason="the embedded ViT bundle is not built")
@torch.no_grad()
def test_every_served_vit_subnet_equals_its_extracted_model():
    from superserve.embedded import load_bundle

    bundle = load_bundle(VIT_BUNDLE.root)
    model = bundle.model
    x = bundle.subset().normalized(0, 8)
    assert len(bundle.profile.subnets) >= 20
    for s in bundle.profile.subnets:
        model.actuate(s.id)
        dynamic = model(x)
        plain = extract(model, s.id)
        assert (plain(x) - dynamic).abs().max() < 1e-5, s.id


def test_weights_round_trip_through_the_bundle_loader(tmp_path):
    from superserve.supernet import save_norm_table, save_weights
    from superserve.supernet.calibrate import calibrate

    model = _random_model(TINY)
    served = [TINY.largest(), TINY.smallest()]
    calibrate(model, served, lambda: iter(()))  # LayerNorm: records the served set only
    save_weights(model, tmp_path / "w.safetensors")
    save_norm_table(model, tmp_path / "n.safetensors")
    loaded = load_supernet(tmp_path / "w.safetensors", tmp_path / "n.safetensors")
    assert isinstance(loaded, SuperTransformer) and set(loaded.norm_rows) == {c.id for c in served}
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for c in served:
            model.actuate(c)
            loaded.actuate(c.id)
            assert torch.equal(model(x), loaded(x))


@pytest.mark.skipif(not DEFAULT_FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_vit_family_trains_resumes_and_reschedules(tmp_path):
    """`superserve train --family vit` (tiny run): weights load as a transformer SuperNet; a
    resumed run may change its epoch count only with --reschedule."""
    from superserve.train import TrainConfig, train

    base = dict(limit=128, batch_size=64, threads=1, family="vit", optimizer="adamw", lr=1e-3, weight_decay=0.05)
    cfg = TrainConfig(out=str(tmp_path), epochs=2, **base)
    assert train(cfg, TINY, show_progress=False, stop_after_epoch=1) is None
    with pytest.raises(SystemExit, match="other settings"):
        train(TrainConfig(out=str(tmp_path), epochs=3, **base), TINY, show_progress=False)
    weights = train(TrainConfig(out=str(tmp_path), epochs=3, reschedule=True, **base), TINY, show_progress=False)
    model = load_supernet(weights)
    assert isinstance(model, SuperTransformer) and model.spec == TINY


@pytest.mark.skipif(not DEFAULT_FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_init_from_starts_a_grown_space_on_trained_weights(tmp_path):
    """`--init-from` (progressive shrinking's next stage): the run starts from the parent's
    tensors, may train a larger space of the same sizes, and records where it started;
    weights of other sizes are refused with a message."""
    import json

    from safetensors import safe_open

    from superserve.train import TrainConfig, _init_from, train

    base = dict(limit=128, batch_size=64, threads=1, family="vit", optimizer="adamw", lr=1e-3, weight_decay=0.05)
    parent = train(TrainConfig(out=str(tmp_path / "a"), epochs=1, **base), TINY, show_progress=False)
    grown = TransformerSpec.from_dict({**TINY.to_dict(), "depth_choices": [0.25, 0.5, 0.75, 1.0],
                                       "ffn_choices": [4, 8, 32]})
    fresh = SuperTransformer(grown)
    _init_from(TrainConfig(init_from=str(parent), **base), fresh)
    ref = load_supernet(parent).state_dict()
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ref.items())

    child = train(TrainConfig(out=str(tmp_path / "b"), epochs=1, init_from=str(parent), **base), grown,
                  show_progress=False)
    assert load_supernet(child).spec == grown
    with safe_open(str(parent), framework="pt") as f:
        parent_history = f.metadata()["history"]
    with safe_open(str(child), framework="pt") as f:
        start = json.loads(f.metadata()["init_from"])
    assert start["path"] == str(parent) and start["history"] == parent_history

    wide = TransformerSpec.from_dict({**TINY.to_dict(), "embed_dim": 32, "embed_choices": [16, 32]})
    with pytest.raises(ValueError, match="do not fit"):
        train(TrainConfig(out=str(tmp_path / "c"), epochs=1, init_from=str(parent), **base), wide,
              show_progress=False)


def test_vit_space_file_sets_the_elastic_choices(tmp_path):
    """`superserve train --family vit --space FILE`: the shipped stage-1 file is the space the
    first stage of the embedded ViT trained on; other keys and bad values are refused."""
    import json

    from superserve.supernet.vit import fashion_mnist_vit_spec

    stage1 = fashion_mnist_vit_spec(str(EMBEDDED_DIR.parent / "spaces" / "vit_stage1.json"))
    full = fashion_mnist_vit_spec()
    assert stage1.depth_choices == (0.5, 0.75, 1.0) and stage1.embed_choices == (48, 72, 96)
    assert (stage1.embed_dim, stage1.ffn_dim, stage1.num_layers) == (full.embed_dim, full.ffn_dim, full.num_layers)
    assert full.smallest().id == "d025-e32-h1-f48" and VIT_BUNDLE.weights.exists()
    assert load_supernet(VIT_BUNDLE.weights).spec == full
    for bad, match in (({"stem_channels": [8]}, "sets only"), ({"ffn_choices": []}, "ffn_choices"),
                       ({"depth_choices": [1.5]}, "depth_choices"), ({"ffn_choices": [999]}, "exceed")):
        path = tmp_path / "space.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            fashion_mnist_vit_spec(str(path))
