"""Workloads: rates and CV^2 within tolerance, reproducibility, loaders, files."""
import numpy as np
import pytest

from superserve.workload import (Trace, azure_functions, azure_functions_minute_counts, azure_functions_sample,
                                 azure_llm, bundled_trace_names, bundled_trace_path, bursty, gamma, ipp_cv2, onoff,
                                 onoff_parameters, poisson, time_varying, timestamped)

FUNCTIONS = bundled_trace_path("azure_functions_2019_sample")
LLM = bundled_trace_path("azure_llm_2023_conv")


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


def test_bundled_traces_ship_with_the_package():
    assert set(bundled_trace_names()) == {"azure_llm_2023_conv", "azure_functions_2019_sample"}
    for name in bundled_trace_names():
        path = bundled_trace_path(name)
        assert path.is_file() and path.parent.name == "traces"
        assert (path.parent / "README.md").read_text().count("CC-BY 4.0") >= 1
    assert bundled_trace_path("azure_llm_2023_conv.csv") == LLM
    with pytest.raises(LookupError, match="available: azure_functions_2019_sample, azure_llm_2023_conv"):
        bundled_trace_path("azure_llm_2024")


def test_bundled_loaders_by_name():
    assert len(azure_llm()) == 19366
    fn = azure_functions_sample(duration_s=10, mean_rate=1000, seed=0)
    assert fn.mean_rate == pytest.approx(1000, rel=0.05)
    assert fn.meta["cite"].startswith("Shahrad") and azure_llm().meta["cite"].startswith("Patel")


def test_summary_reports_measured_next_to_asked():
    tr = gamma(1000, 4, 30, seed=2)
    s = tr.summary()
    assert s["cv2_asked"] == 4 and s["cv2_measured"] == pytest.approx(4, rel=0.2)
    assert s["cv2_measured"] == tr.meta["cv2_measured"] == pytest.approx(tr.interarrival_cv2(), abs=1e-4)
    _, per_100ms = tr.rate_series(0.1)
    _, per_1s = tr.rate_series(1.0)
    # Whole bins only: the trace ends just before 30 s, so its last 100 ms and 1 s bins are partial.
    assert s["peak_to_mean_100ms"] == pytest.approx(per_100ms[:-1].max() / tr.mean_rate, rel=1e-3)
    assert s["peak_to_mean_1s"] == pytest.approx(per_1s[:-1].max() / tr.mean_rate, rel=1e-3)
    assert s["peak_to_mean_100ms"] >= s["peak_to_mean_1s"] > 1
    # No peak at a scale longer than the trace.
    assert gamma(1000, 4, 0.5, seed=2).summary()["peak_to_mean_1s"] is None


def test_bursty_reports_diluted_cv2():
    # The asked CV^2 is the Gamma stream's; the constant base fills its gaps.
    tr = bursty(300, 400, 8, 30, seed=1)
    assert tr.meta["cv2_asked"] == 8 and "Gamma" in tr.meta["cv2_asked_applies_to"]
    assert tr.meta["cv2_measured"] < 4
    assert tr.meta["cv2_measured"] == pytest.approx(tr.interarrival_cv2(), abs=1e-4)


def test_window_measures_the_slice_again():
    tr = onoff(1000, 200, 60, seed=4)
    part = tr.window(10, 20)
    assert part.meta["cv2_measured"] == Trace(part.arrivals).measured()["cv2_measured"]
    assert part.meta["cv2_measured"] != tr.meta["cv2_measured"]
    assert part.meta["cv2_asked"] == 200


def test_onoff_seeded_and_reproducible():
    a, b, c = onoff(800, 50, 20, seed=5), onoff(800, 50, 20, seed=5), onoff(800, 50, 20, seed=6)
    assert np.array_equal(a.arrivals, b.arrivals) and not np.array_equal(a.arrivals, c.arrivals)
    assert a.meta == b.meta


def test_onoff_parameters_meet_the_closed_form():
    par = onoff_parameters(1000, 200, 50)
    assert par["burst_rate"] * par["on_fraction"] == pytest.approx(1000)
    assert par["off_ms"] == pytest.approx(50 * (1 - par["on_fraction"]) / par["on_fraction"])
    assert ipp_cv2(par["burst_rate"], par["on_ms"] / 1e3, par["off_ms"] / 1e3) == pytest.approx(200)
    with pytest.raises(ValueError, match="CV\\^2 > 1"):
        onoff_parameters(1000, 0.5, 50)


@pytest.mark.parametrize("cv2,duration_s", [(8, 60), (50, 120), (200, 300)])
def test_onoff_reaches_target_cv2_and_rate(cv2, duration_s):
    tr = onoff(1000, cv2, duration_s, seed=cv2)
    assert tr.mean_rate == pytest.approx(1000, rel=0.05)
    assert tr.interarrival_cv2() == pytest.approx(cv2, rel=0.3)
    assert tr.meta["cv2_asked"] == cv2 and tr.meta["cv2_measured"] == pytest.approx(tr.interarrival_cv2(), abs=1e-4)
    # Bursts run well above the mean rate: more so the higher the target.
    assert tr.meta["peak_to_mean_100ms"] > 1.3


@pytest.mark.parametrize("cv2,burst_ms", [(200, 50), (500, 100)])
def test_onoff_burst_lengths_as_asked(cv2, burst_ms):
    tr = onoff(1000, cv2, 300, burst_ms=burst_ms, seed=11)
    a = tr.arrivals
    # Inside a burst gaps are Exp(burst rate); a silence (mean off_ms, here >= 100 ms) is far
    # longer than 20 mean in-burst gaps, so cutting there recovers the bursts.
    cut = np.nonzero(np.diff(a) > 20 / tr.meta["burst_rate"])[0]
    first, last = np.concatenate([[0], cut + 1]), np.concatenate([cut, [a.size - 1]])
    spans_ms = (a[last] - a[first]) * 1e3
    assert spans_ms.mean() == pytest.approx(burst_ms, rel=0.15)
    assert tr.meta["on_ms_realised"] == pytest.approx(burst_ms, rel=0.15)
    assert tr.meta["off_ms"] > burst_ms
    silences_ms = np.diff(a)[cut] * 1e3
    assert silences_ms.mean() == pytest.approx(tr.meta["off_ms"], rel=0.15)


def test_timestamped_compresses_time_and_keeps_shape():
    native = timestamped(LLM)
    fast = timestamped(LLM, mean_rate=2000)
    factor = fast.meta["compression"]
    assert factor == pytest.approx(2000 / native.meta["native_rate"])
    # One factor for every gap: the replay is the original, squeezed.
    assert np.allclose(fast.arrivals * factor, native.arrivals, rtol=1e-9, atol=1e-6)
    assert fast.meta["cv2_measured"] == pytest.approx(native.meta["cv2_measured"], rel=1e-6)
    assert fast.meta["time_scale"] == pytest.approx(1 / factor)


def test_timestamped_window_in_original_time():
    native = timestamped(LLM)
    part = timestamped(LLM, mean_rate=2000, window_s=(600, 1200))
    expected = native.arrivals[(native.arrivals >= 600) & (native.arrivals < 1200)]
    assert len(part) == expected.size
    assert np.allclose(part.arrivals * part.meta["compression"] + 600, expected, atol=1e-6)
    assert part.duration_s * part.meta["compression"] <= 600
    assert part.mean_rate == pytest.approx(2000, rel=0.02)
    assert part.meta["window_s"] == [600.0, 1200.0]
    with pytest.raises(ValueError, match="window"):
        timestamped(LLM, window_s=(5000, 6000))
    assert azure_llm(mean_rate=2000, window_s=(600, 1200)).arrivals.tolist() == part.arrivals.tolist()


def test_replays_report_compression_and_measured_stats():
    fn = azure_functions(FUNCTIONS, duration_s=24, mean_rate=1000, seed=0)
    assert fn.meta["compression"] == pytest.approx(1440 * 60 / 24)
    for tr in (fn, azure_llm(mean_rate=500)):
        s = tr.summary()
        assert s["compression"] == tr.meta["compression"]
        for key in ("cv2_measured", "peak_to_mean_100ms", "peak_to_mean_1s"):
            assert s[key] == tr.meta[key] and s[key] > 0


def test_onoff_from_a_chosen_burst_rate():
    # At high mean rates users pick the burst rate and ask for the CV^2 that goes with it.
    mean, burst_rate, on_s = 20000, 100000, 0.05
    target = ipp_cv2(burst_rate, on_s, on_s * (burst_rate / mean - 1))
    tr = onoff(mean, target, 30, burst_ms=on_s * 1e3, seed=1)
    assert tr.meta["burst_rate"] == pytest.approx(burst_rate)
    assert tr.meta["peak_to_mean_100ms"] > 3
