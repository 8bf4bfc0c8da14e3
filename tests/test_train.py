"""Training is deterministic for a seed and resumable at epoch boundaries (tiny runs)."""
from __future__ import annotations

import pytest
import torch

from superserve.datasets import DEFAULT_FMNIST, load_fashion_mnist, train_val_split
from superserve.supernet import load_supernet
from superserve.supernet.config import SuperNetSpec
from superserve.train import TrainConfig, augment, resolve_precision, train

pytestmark = pytest.mark.skipif(not DEFAULT_FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist "
                                "(make test installs it)")
TINY = SuperNetSpec(stem_channels=8, stage_channels=(8, 16), stage_strides=(1, 2), depth_choices=(1, 2))


def _weights(path):
    return {k: v for k, v in load_supernet(path).state_dict().items() if not k.endswith((".stats", ".offsets"))}


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto: bf16 autocast where native
def test_same_seed_same_weights_and_resume_matches(tmp_path, precision):
    base = dict(epochs=2, limit=256, batch_size=64, threads=1, precision=precision)
    a = train(TrainConfig(out=str(tmp_path / "a"), **base), TINY, show_progress=False)
    b = train(TrainConfig(out=str(tmp_path / "b"), **base), TINY, show_progress=False)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # Interrupted after one epoch, then resumed: exactly the uninterrupted run's weights.
    cfg = TrainConfig(out=str(tmp_path / "c"), **base)
    assert train(cfg, TINY, show_progress=False, stop_after_epoch=1) is None
    c = train(cfg, TINY, show_progress=False)
    wc = _weights(c)
    assert all(torch.equal(wc[k], wa[k]) for k in wa)


def test_resume_refuses_other_settings(tmp_path):
    train(TrainConfig(out=str(tmp_path), epochs=1, limit=128, batch_size=64, threads=1), TINY, show_progress=False)
    with pytest.raises(SystemExit, match="other settings"):
        train(TrainConfig(out=str(tmp_path), epochs=1, limit=128, batch_size=64, lr=0.5, threads=1), TINY,
              show_progress=False)


def test_precision_is_checked():
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16")


def test_validation_split_is_held_out_and_fixed():
    full, test = load_fashion_mnist()
    assert len(full) == 60000 and len(test) == 10000
    tr1, va1 = train_val_split(full, 5000, seed=0)
    tr2, va2 = train_val_split(full, 5000, seed=0)
    assert len(tr1) == 55000 and len(va1) == 5000
    assert torch.equal(va1.labels, va2.labels)


def test_augment_keeps_shape_and_content():
    x = torch.randint(0, 255, (16, 28, 28), dtype=torch.uint8)
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    # a crop of the 2-pixel padded image, possibly flipped: most pixels come from the image
    assert (y > 0).float().mean() > 0.7
