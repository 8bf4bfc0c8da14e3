"""Fixtures shared by the test files."""
from __future__ import annotations

import pytest

from superserve.scheduling.profile import LatencyProfile, SubnetProfile


def two_subnet_profile() -> LatencyProfile:
    """small: 2 ms + 1 ms/request; big: 4 ms + 2 ms/request; batches up to 4 (p99 = p50)."""
    small = SubnetProfile("small", 0.7, (3.0, 4.0, 5.0, 6.0), (3.0, 4.0, 5.0, 6.0))
    big = SubnetProfile("big", 0.9, (6.0, 8.0, 10.0, 12.0), (6.0, 8.0, 10.0, 12.0))
    return LatencyProfile((small, big))


@pytest.fixture
def tiny_profile() -> LatencyProfile:
    """Two SubNets whose timings are easy to add up by hand (see :func:`two_subnet_profile`)."""
    return two_subnet_profile()
