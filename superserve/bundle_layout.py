"""The layout of a SuperNet bundle: which file holds what, and in which format.

A bundle is a directory with
  weights.safetensors     SuperNet weights (spec in the metadata)
  subnetnorm.safetensors  SubnetNorm table of the served (Pareto) SubNets
  profile.json            latency profile of those SubNets (LatencyProfile format)
  subset.safetensors      a labelled test subset (uint8 images), for clients and checks
  subset_accuracy.json    how many subset images each served SubNet gets right (optional)
The embedded default ships inside the package; a user's own SuperNet is a bundle with the
same layout (`superserve serve --bundle DIR`). This module names the files only: it imports
nothing, so the router, the load client and the simulator can read a bundle without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS = "weights.safetensors"
NORM = "subnetnorm.safetensors"
PROFILE = "profile.json"
SUBSET = "subset.safetensors"
SUBSET_ACCURACY = "subset_accuracy.json"
REQUIRED = (WEIGHTS, NORM, PROFILE)  # what serving needs; the subset is for clients and checks

# The "format" entry each file's metadata carries.
WEIGHTS_FORMAT = "superserve-supernet/1"
NORM_FORMAT = "superserve-subnetnorm/1"
PROFILE_FORMAT = "superserve-profile/1"
SUBSET_FORMAT = "superserve-subset/1"

EMBEDDED_DIR = Path(__file__).resolve().parent / "data" / "embedded"


@dataclass(frozen=True)
class BundleLayout:
    """The paths of one bundle's files."""

    root: Path

    def __init__(self, root: str | Path = EMBEDDED_DIR) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS

    @property
    def norm(self) -> Path:
        return self.root / NORM

    @property
    def profile(self) -> Path:
        return self.root / PROFILE

    @property
    def subset(self) -> Path:
        return self.root / SUBSET

    @property
    def subset_accuracy(self) -> Path:
        return self.root / SUBSET_ACCURACY

    def missing(self, names: tuple[str, ...] = REQUIRED) -> list[str]:
        """The files of ``names`` this bundle lacks."""
        return [n for n in names if not (self.root / n).exists()]

    def require(self, names: tuple[str, ...] = REQUIRED) -> "BundleLayout":
        """Raise a FileNotFoundError that says what to do when a file of ``names`` is missing."""
        missing = self.missing(names)
        if missing:
            raise FileNotFoundError(
                f"{self.root} is not a complete SuperNet bundle (missing {', '.join(missing)}); build one with "
                "`superserve train` then `superserve search`, or pass --bundle DIR (layout: "
                "superserve/bundle_layout.py)")
        return self


EMBEDDED = BundleLayout(EMBEDDED_DIR)
