"""superserve: serving weight-shared SuperNets with SubNetAct and SlackFit."""
import os
from typing import Any

# oneDNN caches one compiled primitive per (layer shape, batch size). Serving switches SubNet and
# batch size on every batch, so the default capacity (1,024) thrashes: interleaved (SubNet,
# batch) runs are much slower than back-to-back ones (docs/loadgen.md). The cache is read
# lazily, so this holds for every process that imports superserve before its first convolution
# (workers, profiler, benchmarks); a user's own setting wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "65536")

__version__ = "0.1.0"

_CLIENT_NAMES = ("Client", "AsyncClient")


def __getattr__(name: str) -> Any:
    """``superserve.Client`` / ``superserve.AsyncClient``, imported on first use: every
    submodule import runs this file, so it must not load the client (numpy) eagerly."""
    if name in _CLIENT_NAMES:
        from superserve import client

        return getattr(client, name)
    raise AttributeError(f"module 'superserve' has no attribute {name!r}")
