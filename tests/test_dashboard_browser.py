"""The dashboard in a real headless browser (Debian's chromium under selenium): a real server on
the embedded bundle (SlackFit, 1 worker), the page opened before a burst, the page's charts
checked while the load client sends it, the SubNet timeline checked after, a screenshot kept.

Skips only when no chromium binary is installed (`make browser` installs it and its driver
the way `make data` installs Fashion-MNIST). The benchmark (python -m benchmarks.dashboard)
runs the same burst and commits its screenshot as benchmarks/results/dashboard.png.
"""
from __future__ import annotations

import pytest

from benchmarks.dashboard import (browser_paths, burst_trace, open_browser, page_status, phase_accuracy, send,
                                  server_data, severe_console_errors, wait_for, watch_load)
from superserve.loadgen import payloads_from_bundle
from superserve.serving import ServerProcess

pytestmark = pytest.mark.skipif(browser_paths()[0] is None, reason=(
    "no chromium binary: the dashboard's browser test needs Debian's chromium and chromium-driver "
    "(`make browser`, or apt-get install chromium chromium-driver)"))


def test_dashboard_charts_move_while_a_burst_is_served(tmp_path):
    with ServerProcess(workers=1, grpc_port=None) as srv:
        payloads = payloads_from_bundle(None, slo_ms=srv.slo_ms, outputs=["class_index"])
        driver = open_browser()
        try:
            driver.get(srv.http_url + "/dashboard?window=60")
            before = wait_for(driver, lambda s: s["polls"] >= 1)
            assert before["batches"] == 0 and before["errors"] == 0  # nothing served yet
            run, samples = watch_load(driver, lambda: send(srv, burst_trace(100.0, 1000.0, 2.0, 1.5), payloads))
            # The charts updated while the load ran, poll after poll, not only at the end.
            grew = sum(b["batches"] > a["batches"] for a, b in zip(samples, samples[1:]))
            assert grew >= 3, samples
            server = server_data(srv)
            after = wait_for(driver, lambda s: s["last_seq"] >= server["last_seq"])
            # The page has every batch the server recorded, and they hold every answered request.
            assert after["batches"] == len(server["batches"])
            size = server["batch_fields"].index("size")
            assert sum(b[size] for b in server["batches"]) == int((run.records.subnet >= 0).sum())
            # The SubNet timeline moved: more than one SubNet on it, and (the client's records) the
            # burst was served by less accurate, faster SubNets than the calm phases around it.
            assert after["distinct"] >= 2 and after["acc_min"] < after["acc_max"], after
            served = phase_accuracy(run, 2.0, 1.5)
            assert served["burst"]["mean_accuracy"] < served["calm"]["mean_accuracy"], served
            assert after["points"] == after["batches"], after  # every batch of the run is drawn
            path = tmp_path / "dashboard.png"
            assert driver.save_screenshot(str(path))
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
            assert severe_console_errors(driver) == []
            assert page_status(driver)["errors"] == 0
        finally:
            driver.quit()
