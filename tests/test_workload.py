"""Workloads: rates and CV^2 within tolerance, reproducibility, loaders, files."""
import numpy as np
import pytest

from superserve.workload import Trace, azure_functions, azure_functions_minute_counts, bursty, gamma, poisson, time_varying, timestamped

FUNCTIONS = "/work/shared/traces/azure_functions_2019_sample_invocations.csv"
LLM = "/work/shared/traces/azure_llm_2023_conv.csv"


def test_poisson_rate_and_cv2():
    tr = poisson(2000, 20, seed=3)
    assert tr.mean_rate == pytest.approx(2000, rel=0.03)
    assert tr.interarrival_cv2() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("cv2", [2, 4, 8])
def test_gamma_cv2(cv2):
    tr = gamma(1000, cv2, 60, seed=cv2)
    assert tr.mean_rate == pytest.approx(1000, rel=0.05)
    assert tr.interarrival_cv2() == pytest.approx(cv2, rel=0.12)


def test_bursty_is_base_plus_variant():
    tr = bursty(1000, 1500, 8, 40, seed=1)
    assert tr.mean_rate == pytest.approx(2500, rel=0.05)
    assert tr.meta["kind"] == "bursty"
    # Burstier than Poisson at 100 ms scale, but the constant base keeps gaps bounded.
    _, rates = tr.rate_series(0.1)
    assert rates.std() / rates.mean() > 0.1
    assert np.diff(tr.arrivals).max() < 1.5 / 1000


def test_time_varying_ramp():
    tr = time_varying(1000, 3000, tau=1000, cv2=8, hold_start_s=3, hold_end_s=5, seed=2)
    assert tr.meta["ramp_s"] == pytest.approx(2.0)
    assert tr.window(0, 3).mean_rate == pytest.approx(1000, rel=0.2)
    assert len(tr.window(5.2, 10)) / 4.8 == pytest.approx(3000, rel=0.15)
    # Cumulative count over the ramp: integral of the rate, 2 s at mean 2000.
    assert len(tr.window(3, 5)) == pytest.approx(4000, rel=0.15)
    gaps = np.diff(tr.window(5.2, 10).arrivals)
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(8, rel=0.25)


def test_seeded_and_reproducible(tmp_path):
    a, b, c = bursty(500, 500, 4, 5, seed=7), bursty(500, 500, 4, 5, seed=7), bursty(500, 500, 4, 5, seed=8)
    assert np.array_equal(a.arrivals, b.arrivals) and not np.array_equal(a.arrivals, c.arrivals)
    path = a.save(tmp_path / "t")
    back = Trace.load(path)
    assert np.array_equal(back.arrivals, a.arrivals) and back.meta == a.meta and back.name == a.name


def test_azure_functions_loader():
    counts = azure_functions_minute_counts(FUNCTIONS)
    assert counts.size == 1440 and counts.sum() > 0
    tr = azure_functions(FUNCTIONS, duration_s=24, mean_rate=1000, seed=0)
    # Mean over the whole (compressed) day is the target; active minutes carry all of it.
    assert len(tr) / 24 == pytest.approx(1000, rel=0.05)
    assert tr.duration_s <= 24
    trimmed = azure_functions(FUNCTIONS, duration_s=10, mean_rate=1000, trim_idle=True, seed=0)
    assert trimmed.mean_rate == pytest.approx(1000, rel=0.05)


def test_azure_functions_rates_follow_minutes(tmp_path):
    f = tmp_path / "inv.csv"
    header = "HashOwner,HashApp,HashFunction,Trigger," + ",".join(str(i) for i in range(1, 5))
    f.write_text(header + "\na,b,c,http,10,0,30,0\nd,e,f,timer,0,0,10,0\n")
    tr = azure_functions(f, duration_s=40, mean_rate=500, seed=1)
    per_bin = np.histogram(tr.arrivals, bins=4, range=(0, 40))[0] / 10
    assert per_bin[1] == 0 and per_bin[3] == 0
    assert per_bin[2] / per_bin[0] == pytest.approx(4, rel=0.1)


def test_timestamped_loader_rescales():
    native = timestamped(LLM)
    assert len(native) == 19366 and native.mean_rate == pytest.approx(5.5, rel=0.05)
    fast = timestamped(LLM, mean_rate=2000)
    assert fast.mean_rate == pytest.approx(2000, rel=0.01)
    assert fast.interarrival_cv2() == pytest.approx(native.interarrival_cv2(), rel=1e-6)
    short = timestamped(LLM, time_scale=0.01, max_duration_s=10)
    assert short.duration_s < 10
    with pytest.raises(ValueError, match="column"):
        timestamped(LLM, column="nope")
