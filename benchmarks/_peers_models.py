"""What benchmarks/peers.py serves: the smallest and largest SubNet of the embedded conv
SuperNet as plain extracted torch models (what a single-model server such as LitServe or Ray
Serve loads), a no-op model, and the request images.

Kept free of any peer's imports: the peer servers (_peers_litserve.py, _peers_ray.py) import
this in their own processes.
"""
from __future__ import annotations

from functools import lru_cache

MODELS = ("noop", "smallest", "largest")
INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


@lru_cache(maxsize=1)
def profile():
    from superserve.bundle_layout import BundleLayout
    from superserve.embedded import EMBEDDED_DIR
    from superserve.scheduling.profile import LatencyProfile

    return LatencyProfile.load(BundleLayout(EMBEDDED_DIR).profile)


def subnet_id(model: str) -> str:
    """The profile id of the ``smallest`` / ``largest`` SubNet (noop: the smallest, which a
    no-op superserve pins Clipper+ to)."""
    from superserve.experiments.comparison import smallest_subnet

    p = profile()
    return p.largest.id if model == "largest" else smallest_subnet(p).id


def build_model(model: str):
    """A plain torch module (eval mode) of the SubNet, or None for ``noop``."""
    if model == "noop":
        return None
    from superserve.embedded import EMBEDDED_DIR
    from superserve.bundle_layout import BundleLayout
    from superserve.supernet import load_supernet
    from superserve.supernet.extract import extract

    layout = BundleLayout(EMBEDDED_DIR)
    supernet = load_supernet(layout.weights, layout.norm)
    return extract(supernet, supernet.config_from_id(subnet_id(model))).eval()


class Predictor:
    """The model side of a peer: batch of N x 1 x 28 x 28 float32 -> N x 10 logits, one torch
    thread, inference mode; the no-op model returns zeros without touching torch's kernels."""

    def __init__(self, model: str) -> None:
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.model = build_model(model)
        if self.model is not None:  # warm every batch size once, as superserve's workers do
            with torch.inference_mode():
                for b in range(1, 17):
                    self.model(torch.zeros(b, *INPUT_SHAPE))

    def __call__(self, rows: list[list[float]]) -> list[list[float]]:
        if self.model is None:
            return [[0.0] * NUM_CLASSES for _ in rows]
        torch = self.torch
        x = torch.tensor(rows, dtype=torch.float32).view(len(rows), *INPUT_SHAPE)
        with torch.inference_mode():
            return self.model(x).tolist()


def images(n: int = 64) -> list[list[float]]:
    """``n`` Fashion-MNIST images of the bundle's labelled subset, normalised as the model
    expects, each a flat list of 784 floats (5 decimals: the JSON is the same for every system)."""
    from superserve.embedded import EMBEDDED_DIR, load_subset
    from superserve.bundle_layout import BundleLayout
    from superserve.loadgen.payloads import normalize_images

    x = normalize_images(load_subset(BundleLayout(EMBEDDED_DIR).subset).images[:n].numpy())
    return [[round(float(v), 5) for v in img.ravel()] for img in x]
