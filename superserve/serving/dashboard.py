"""The live dashboard: a static page and the JSON it polls, served by the REST front end.

``GET /dashboard`` serves ``dashboard_static/`` (HTML, JS and CSS written for this package:
no build step, no CDN, no third-party script; the Content-Security-Policy allows only this
server). ``GET /v2/dashboard/data?since=SEQ`` answers with every record of the router's
activity rings after SEQ (superserve/serving/activity.py) plus the present state (queue,
workers, the calibrated estimate), so a page that polls twice a second moves a few kB per
poll and the router serialises only what is new.

Auth: the static files are the same for every server and carry no data, and a browser
cannot send a bearer header when it navigates to a page, so they are served without a
token; the data endpoint follows the server's token rule like every other endpoint. The page
takes the token from the address's fragment (``/dashboard#token=...``: never sent to the
server, never in a log) or asks for it after a 401, and sends it as ``Authorization: Bearer``.
"""
from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from aiohttp import web

from superserve.serving.activity import SECOND_FIELDS
from superserve.serving.model_info import ModelInfo
from superserve.serving.router import Router

PAGE = "/dashboard"
DATA = "/v2/dashboard/data"
_FILES = {"index.html": "text/html", "dashboard.js": "text/javascript", "dashboard.css": "text/css",
          "favicon.svg": "image/svg+xml"}
STATIC_PATHS = frozenset({PAGE, PAGE + "/", *(f"{PAGE}/{name}" for name in _FILES)})
MAX_ROWS = 2000  # per kind and answer: bounds one answer's size and the time spent encoding it
# A batch record on the wire: integers only (times in ms of time.monotonic(), compute time in
# us), which encode about four times faster than rounded floats.
BATCH_WIRE_FIELDS = ("seq", "t_ms", "subnet", "size", "in_time", "compute_us", "worker", "queue")
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
}


class Dashboard:
    def __init__(self, info: ModelInfo, router: Router, slo_ms: float) -> None:
        self.router = router
        self._files = {name: (resources.files("superserve.serving").joinpath("dashboard_static", name)
                              .read_bytes(), ctype) for name, ctype in _FILES.items()}
        # Sent with a first answer (since=0) and after a server restart: what never changes.
        # ``subnets`` is in the order of ``info.subnet_ids``, the index a batch record carries.
        self._slo_ms = slo_ms
        self.set_model(info)

    def set_model(self, info: ModelInfo) -> None:
        """Describe ``info`` (at start, and after a hot reload)."""
        self._model = {"name": info.name, "slo_ms": self._slo_ms, "max_batch": info.profile.max_batch,
                       "subnets": [{"id": s.id, "accuracy": s.accuracy} for s in info.profile.subnets]}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PAGE, self.page)
        app.router.add_get(PAGE + "/", self.page)
        app.router.add_get(PAGE + "/{name}", self.static)
        app.router.add_get(DATA, self.data)

    async def page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._files:
            return web.json_response({"error": f"no dashboard file {name[:64]!r}"}, status=404)
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        body, ctype = self._files[name]
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=_HEADERS)

    async def data(self, request: web.Request) -> web.Response:
        raw = request.query.get("since", "0")
        if not raw.isdigit() or len(raw) > 20:
            return web.json_response({"error": f"since must be a record number >= 0, got {raw[:32]!r}"}, status=400)
        return web.Response(body=json.dumps(self.snapshot(int(raw))).encode(), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    def snapshot(self, since: int) -> dict[str, Any]:
        """What the page needs after record ``since``: new records and the present state."""
        router = self.router
        got = router.activity.since(since, MAX_ROWS)
        restarted = since > got.last_seq  # the page saw a previous server: start over
        if restarted:
            got = router.activity.since(0, MAX_ROWS)
        out: dict[str, Any] = {
            "now": round(time.monotonic(), 3), "last_seq": got.last_seq, "reset": restarted,
            "truncated": got.truncated,
            "batch_fields": BATCH_WIRE_FIELDS, "second_fields": SECOND_FIELDS,
            "batches": [[s, int(t * 1000.0), sub, n, ok, int(c * 1000.0), w, q] for s, t, sub, n, ok, c, w, q in got.batches],
            "seconds": [_rounded(r) for r in got.seconds],
            "ready": router.ready, "queue": len(router.queue), "policy": repr(router.policy),
            "workers": self._workers(), "calibration": router.calibration_info(),
        }
        if since == 0 or restarted:
            out["model"] = self._model
        return out

    def _workers(self) -> list[dict[str, Any]]:
        router, pool = self.router, self.router.pool
        if pool is None:
            return []
        now = time.monotonic()
        out = []
        for w in pool.workers:
            busy = router.in_flight(w)
            out.append({"index": w.index, "state": w.state.value, "pid": w.pid, "deaths": w.deaths,
                        "subnet": busy.decision.subnet_id if busy else None, "batch": busy.size if busy else None,
                        "running_ms": round((now - busy.dispatched) * 1000.0, 2) if busy else None})
        return out


def _rounded(record: tuple) -> list[Any]:
    return [round(v, 4) if isinstance(v, float) else v for v in record]
