"""What the on-chip weight buffer holds, and how that changes: no cache, an LRU cache of whole
layers, a pinned SubGraph (static), and a SubGraph re-chosen from the recent SubNets.

Every cache answers two questions per query: what the scheduler may *plan* with (per SubNet
and layer, the bytes it would fetch now) and what running a SubNet *actually* fetches (and how
the buffer changes). For pinned SubGraphs the two agree exactly. For LRU they cannot without
simulating each candidate layer by layer (a SubNet's own early layers evict the cached late
layers it is about to need), so LRU plans with the no-cache bytes, an upper bound.
"""
from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import OrderedDict, deque

import numpy as np

from superserve.subgraph.catalog import Catalog
from superserve.subgraph.cost import layer_fetch_bytes
from superserve.subgraph.space import intersect


class WeightCache(ABC):
    name = "cache"

    def __init__(self, catalog: Catalog, buffer_bytes: int) -> None:
        if buffer_bytes < 0:
            raise ValueError("buffer_bytes must be >= 0")
        self.catalog = catalog
        self.buffer_bytes = int(buffer_bytes)
        self.full_fetch = layer_fetch_bytes(catalog, catalog.space.empty())

    @abstractmethod
    def planned_fetch(self) -> np.ndarray:
        """(subnets, layers): bytes each SubNet would fetch per layer if run now."""

    @abstractmethod
    def run(self, s: int) -> np.ndarray:
        """Run SubNet ``s``: its actual fetch per layer; updates the buffer."""

    def reconfigure(self) -> int:
        """Called between queries; returns the bytes loaded into the buffer now (0: none)."""
        return 0


class NoCache(WeightCache):
    name = "no_cache"

    def planned_fetch(self) -> np.ndarray:
        return self.full_fetch

    def run(self, s: int) -> np.ndarray:
        return self.full_fetch[s]


class PinnedSubGraph(WeightCache):
    """A SubGraph box kept in the buffer; every SubNet fetches only what lies outside it."""

    name = "pinned"

    def __init__(self, catalog: Catalog, buffer_bytes: int, subgraph: np.ndarray | None = None) -> None:
        super().__init__(catalog, buffer_bytes)
        self._set(catalog.space.empty() if subgraph is None else subgraph)

    def _set(self, subgraph: np.ndarray) -> None:
        size = self.catalog.space.nbytes(subgraph)
        if size > self.buffer_bytes:
            raise ValueError(f"SubGraph of {size} bytes does not fit the {self.buffer_bytes}-byte buffer")
        self.subgraph = subgraph
        self._planned = layer_fetch_bytes(self.catalog, subgraph)

    def planned_fetch(self) -> np.ndarray:
        return self._planned

    def run(self, s: int) -> np.ndarray:
        return self._planned[s]


def static_smallest(catalog: Catalog, buffer_bytes: int) -> PinnedSubGraph:
    """The baseline: pin the smallest SubNet (as much of it as fits, first layers first)."""
    weights = np.zeros(len(catalog))
    weights[catalog.smallest] = 1.0
    cache = PinnedSubGraph(catalog, buffer_bytes, choose_subgraph(catalog, weights, buffer_bytes))
    cache.name = "static_smallest"
    return cache


class AdaptiveSubGraph(PinnedSubGraph):
    """Every ``period`` queries, re-choose the SubGraph from the last ``window`` SubNets run
    (:func:`choose_subgraph`, weighted by how often each ran) and load it when the bytes it
    would save over ``window`` more queries exceed the bytes loading it costs."""

    name = "cache_aware"

    def __init__(self, catalog: Catalog, buffer_bytes: int, period: int = 16, window: int = 256) -> None:
        super().__init__(catalog, buffer_bytes)
        if period < 1 or window < 1:
            raise ValueError("period and window must be >= 1")
        self.period, self.window = period, window
        self.history: deque[int] = deque(maxlen=window)
        self.chooser = SubGraphChooser(catalog)
        self._since = 0

    def run(self, s: int) -> np.ndarray:
        self.history.append(s)
        self._since += 1
        return self._planned[s]

    def reconfigure(self) -> int:
        if self._since < self.period or not self.history:
            return 0
        self._since = 0
        cat, sp = self.catalog, self.catalog.space
        weights = np.bincount(np.fromiter(self.history, dtype=np.int64), minlength=len(cat)) / len(self.history)
        new = self.chooser(weights, self.buffer_bytes)
        gain = expected_saving(cat, weights, new) - expected_saving(cat, weights, self.subgraph)
        load = sp.nbytes(new) - sp.nbytes(intersect(new, self.subgraph))
        if load == 0 or gain * self.window <= load:
            return 0
        self._set(new)
        return load


class LayerLRU(WeightCache):
    """A buffer of whole layers (each as the slice last run), least recently used evicted
    first; a layer meets the next SubNet's slice where the two overlap."""

    name = "lru_layers"

    def __init__(self, catalog: Catalog, buffer_bytes: int) -> None:
        super().__init__(catalog, buffer_bytes)
        sp = catalog.space
        self.held = sp.empty()  # per tensor, the box resident
        self.lru: OrderedDict[int, int] = OrderedDict()  # layer -> bytes resident, oldest first
        self.used = 0
        self._tensors = [np.nonzero(sp.layer_of == k)[0] for k in range(len(sp.layers))]

    def planned_fetch(self) -> np.ndarray:
        return self.full_fetch

    def run(self, s: int) -> np.ndarray:
        sp, box = self.catalog.space, self.catalog.boxes[s]
        fetch = self.full_fetch[s].copy()
        eb = sp.element_bytes
        for k in np.nonzero(self.full_fetch[s] > 0)[0].tolist():
            rows = self._tensors[k]
            need = box[rows]
            if k in self.lru:
                hit = int(np.prod(np.minimum(need, self.held[rows]), axis=-1).sum()) * eb
                fetch[k] -= hit
                self.used -= self.lru.pop(k)
            size = int(np.prod(need, axis=-1).sum()) * eb
            self.held[rows] = 0
            if size > self.buffer_bytes:
                continue  # a layer larger than the buffer streams through
            while self.used + size > self.buffer_bytes:
                old, b = self.lru.popitem(last=False)
                self.held[self._tensors[old]] = 0
                self.used -= b
            self.held[rows] = need
            self.lru[k] = size
            self.used += size
        return fetch


def expected_saving(catalog: Catalog, weights: np.ndarray, subgraph: np.ndarray) -> float:
    """Bytes per query a SubGraph keeps on chip when SubNets run with frequencies ``weights``."""
    hit = catalog.space.elements(np.minimum(catalog.boxes, subgraph[None])).sum(axis=1)
    return float(weights @ hit) * catalog.space.element_bytes


def choose_subgraph(catalog: Catalog, weights: np.ndarray, budget_bytes: int) -> np.ndarray:
    """The SubGraph (a box) of at most ``budget_bytes`` that keeps the most bytes on chip per
    query when SubNet i runs with frequency ``weights[i]`` (see :class:`SubGraphChooser`)."""
    return SubGraphChooser(catalog)(weights, budget_bytes)


class SubGraphChooser:
    """Chooses SubGraphs for one catalog; the per-tensor candidates are computed once.

    The saving separates by tensor (a SubNet's hit in tensor t is min(its box, the cached
    extent) there), so choosing is a multiple-choice knapsack: per tensor, one extent among
    the boxes the SubNets read and their pairwise minima (their shared parts). It is solved
    greedily on each tensor's upper convex hull of (bytes, saving), best saving per byte first,
    ties to the earlier tensor; exact when the budget ends on a hull point."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        sp = catalog.space
        self.cands: list[np.ndarray] = []  # per tensor: candidate extents (m, R)
        self.cost: list[np.ndarray] = []  # per tensor: bytes of each candidate (m,)
        self.hits: list[np.ndarray] = []  # per tensor: bytes SubNet s keeps with candidate c (N, m)
        for t in range(len(sp)):
            rows = np.unique(catalog.boxes[:, t], axis=0)
            rows = rows[np.prod(rows, axis=-1) > 0]
            if rows.shape[0] > 1:
                i, j = np.triu_indices(rows.shape[0], 1)
                rows = np.unique(np.concatenate([rows, np.minimum(rows[i], rows[j])]), axis=0)
            self.cands.append(rows)
            self.cost.append(np.prod(rows, axis=-1) * sp.element_bytes)
            self.hits.append(np.prod(np.minimum(catalog.boxes[:, t][:, None], rows[None]), axis=-1)
                             * sp.element_bytes)

    def __call__(self, weights: np.ndarray, budget_bytes: int) -> np.ndarray:
        out = self.catalog.space.empty()
        if budget_bytes <= 0 or not np.any(weights > 0):
            return out
        w = np.asarray(weights, dtype=np.float64)
        heap: list[tuple[float, int, int]] = []
        hulls: list[list[tuple[int, float, int]]] = []
        for t, (cost, hits) in enumerate(zip(self.cost, self.hits)):
            hull = _upper_hull(cost, w @ hits) if cost.size else []
            hulls.append(hull)
            if hull:
                heapq.heappush(heap, (-hull[0][1] / hull[0][0], t, 0))
        left = budget_bytes
        spent = [0] * len(hulls)
        while heap:
            _, t, k = heapq.heappop(heap)
            c, v, row = hulls[t][k]
            if c - spent[t] > left:
                continue  # the next step does not fit; this tensor stays where it is
            left -= c - spent[t]
            spent[t] = c
            out[t] = self.cands[t][row]
            if k + 1 < len(hulls[t]):
                c2, v2, _ = hulls[t][k + 1]
                heapq.heappush(heap, (-(v2 - v) / (c2 - c), t, k + 1))
        return out


def _upper_hull(cost: np.ndarray, value: np.ndarray) -> list[tuple[int, float, int]]:
    """(cost, value, candidate index) on the upper concave hull from (0, 0), by increasing
    cost, each step with a lower saving per byte than the one before (dominated points
    dropped)."""
    pts: list[tuple[int, float, int]] = []
    for i in np.lexsort((-value, cost)).tolist():
        c, v = int(cost[i]), float(value[i])
        if v <= (pts[-1][1] if pts else 0.0):
            continue
        while pts:
            c1, v1 = (pts[-2][0], pts[-2][1]) if len(pts) > 1 else (0, 0.0)
            c2, v2 = pts[-1][0], pts[-1][1]
            # drop the last point when it lies on or under the segment from its predecessor to (c, v)
            if (v2 - v1) * (c - c1) <= (v - v1) * (c2 - c1):
                pts.pop()
            else:
                break
        pts.append((c, v, i))
    return pts
