"""SubGraph Stationary: the weights SubNets of a nested SuperNet share (boxes), an accelerator
cost model with an on-chip weight buffer, and batch-1 scheduling that chooses the SubNet per
query and the SubGraph to keep on chip (our design of the SUSHI idea, MLSys 2023)."""
from superserve.subgraph.caches import (AdaptiveSubGraph, LayerLRU, NoCache, PinnedSubGraph, WeightCache,
                                        choose_subgraph, static_smallest)
from superserve.subgraph.catalog import Catalog
from superserve.subgraph.cost import ZCU104_INT8, Accelerator, CostTable, latency_s, layer_fetch_bytes
from superserve.subgraph.serve import PolicyConfig, Queries, RunResult, choose, serve
from superserve.subgraph.space import TensorSpec, WeightSpace, covers, hull, intersect, union_elements

__all__ = ["TensorSpec", "WeightSpace", "intersect", "hull", "covers", "union_elements", "Catalog", "Accelerator",
           "ZCU104_INT8", "CostTable", "latency_s", "layer_fetch_bytes", "WeightCache", "NoCache", "PinnedSubGraph",
           "AdaptiveSubGraph", "LayerLRU", "static_smallest", "choose_subgraph", "PolicyConfig", "Queries",
           "RunResult", "choose", "serve"]
