"""A roofline cost model of one accelerator with an on-chip weight buffer.

Per layer: latency = max(compute, off-chip bytes / bandwidth) + a fixed per-layer overhead;
a query's latency is the sum over the layers its SubNet runs. Compute = MACs / throughput.
Off-chip bytes = the layer's weights not held in the buffer (plus, once per query, the
SubNet's private bytes, SubnetNorm statistics). Energy = off-chip bytes x off-chip energy per
byte + every weight byte used x on-chip energy per byte (each weight is read from the on-chip
buffer once, whether it was cached or just streamed in). Activations are assumed to stay on
chip (a separate activation buffer): only weights move, which is what SubGraph caching
changes. MAC energy is left out for the same reason (it does not depend on the cache).

The parameters of the shipped presets and where each number comes from are in
:data:`ZCU104_INT8` and docs/subgraph.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from superserve.subgraph.catalog import Catalog


@dataclass(frozen=True)
class Accelerator:
    name: str
    macs_per_s: float  # peak multiply-accumulates per second
    offchip_bytes_per_s: float  # off-chip (DRAM) bandwidth
    offchip_pj_per_byte: float
    onchip_pj_per_byte: float
    layer_overhead_s: float = 0.0  # fixed cost per layer (configuration, pipeline fill, op dispatch)
    onchip_bytes: int = 0  # total on-chip memory of the device (an upper bound on the weight buffer)
    element_bytes: int = 1  # bytes per weight element the device computes with
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for k in ("macs_per_s", "offchip_bytes_per_s"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be > 0")
        if min(self.offchip_pj_per_byte, self.onchip_pj_per_byte, self.layer_overhead_s) < 0:
            raise ValueError("energies and overheads must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Xilinx Zynq UltraScale+ ZCU104 (XCZU7EV) running one DPUCZDX8G B4096 INT8 core. Sources:
#  - compute: B4096 = 4,096 operations (2,048 MACs) per cycle (Xilinx PG338, DPU product
#    guide) at 300 MHz, the clock of the ZCU104 reference design (Xilinx UG1354, "ZCU104
#    Performance": dual B4096 cores at 300 MHz, 2.4 TOPS INT8 peak); one core serves a batch-1
#    query: 614 GMAC/s;
#  - off-chip: the ZCU104's 64-bit PS DDR4 (Xilinx UG1267) at the Zynq UltraScale+ PS
#    controller's DDR4-2400 rate, 19.2 GB/s peak;
#  - on-chip memory: XCZU7EV 11 Mb block RAM + 27 Mb UltraRAM (Xilinx DS891 product table),
#    4.75 MB in all, the ceiling on any weight buffer;
#  - energy per byte: M. Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm): a 64-bit
#    DRAM access 1.3-2.6 nJ -> 160 pJ/byte (low end); a 64-bit read of a 1 MB SRAM 100 pJ ->
#    12.5 pJ/byte. The FPGA is 16 nm, so both are pessimistic in absolute terms; their ratio
#    (about 13x), which decides what caching saves, is the figure that matters.
ZCU104_INT8 = Accelerator(
    name="ZCU104 (XCZU7EV), one DPUCZDX8G B4096 INT8 core at 300 MHz",
    macs_per_s=2048 * 300e6,
    offchip_bytes_per_s=64 / 8 * 2400e6,
    offchip_pj_per_byte=1300 / 8,
    onchip_pj_per_byte=100 / 8,
    layer_overhead_s=0.0,
    onchip_bytes=(11 + 27) * 2**20 // 8,
    element_bytes=1,
    sources={
        "macs_per_s": "Xilinx PG338 (DPUCZDX8G B4096: 4096 ops/cycle) x 300 MHz (ZCU104 DPU clock, Xilinx UG1354)",
        "offchip_bytes_per_s": "ZCU104 64-bit PS DDR4 (Xilinx UG1267) at DDR4-2400 (Zynq UltraScale+ PS controller)",
        "offchip_pj_per_byte": "Horowitz ISSCC 2014, DRAM 1.3 nJ per 64-bit access (45 nm)",
        "onchip_pj_per_byte": "Horowitz ISSCC 2014, 1 MB SRAM 100 pJ per 64-bit read (45 nm)",
        "onchip_bytes": "Xilinx DS891: XCZU7EV 11 Mb BRAM + 27 Mb UltraRAM",
        "element_bytes": "INT8 weights (the DPU's data type)",
    })


@dataclass(frozen=True)
class CostTable:
    """Per SubNet and layer, what does not depend on the cache: MACs, weight elements, and
    the compute time; built once per (catalog, accelerator)."""

    compute_s: np.ndarray  # (subnets, layers)
    layer_used: np.ndarray  # (subnets, layers) bool: the layer runs
    weight_bytes: np.ndarray  # (subnets,) shared-weight bytes read
    private_bytes: np.ndarray  # (subnets,)

    @classmethod
    def build(cls, catalog: Catalog, acc: Accelerator) -> "CostTable":
        sp = catalog.space
        if sp.element_bytes != acc.element_bytes:
            raise ValueError(f"catalog has {sp.element_bytes}-byte weights, {acc.name} computes with "
                             f"{acc.element_bytes}; build the catalog with element_bytes={acc.element_bytes}")
        elems = sp.layer_elements(catalog.boxes)
        return cls(compute_s=sp.layer_macs(catalog.boxes) / acc.macs_per_s, layer_used=elems > 0,
                   weight_bytes=elems.sum(axis=1) * sp.element_bytes, private_bytes=catalog.private_bytes.copy())


def layer_fetch_bytes(catalog: Catalog, cached: np.ndarray) -> np.ndarray:
    """(subnets, layers): weight bytes each SubNet must fetch per layer with ``cached`` in the
    buffer (its box minus the part inside ``cached``)."""
    sp = catalog.space
    hit = np.minimum(catalog.boxes, cached[None])
    return (sp.layer_elements(catalog.boxes) - sp.layer_elements(hit)) * sp.element_bytes


def latency_s(table: CostTable, acc: Accelerator, fetch: np.ndarray, subnets: np.ndarray | None = None) -> np.ndarray:
    """Roofline latency of each row of ``fetch`` (per-layer fetch bytes of the SubNets
    ``subnets``, default all of them, in order); private bytes stream with the first layer."""
    rows = np.arange(table.compute_s.shape[0]) if subnets is None else np.asarray(subnets)
    fetch = fetch.astype(np.float64)
    fetch[:, 0] += table.private_bytes[rows]
    per_layer = np.maximum(table.compute_s[rows], fetch / acc.offchip_bytes_per_s)
    per_layer += acc.layer_overhead_s * table.layer_used[rows]
    return per_layer.sum(axis=1)
