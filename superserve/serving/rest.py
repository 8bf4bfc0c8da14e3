"""KServe v2 / Open Inference Protocol over HTTP (aiohttp), with Triton's binary tensor
extension and model-config endpoint so tritonclient.http and perf_analyzer work unchanged.

aiohttp sets TCP_NODELAY on accepted connections and every answer here is one
``web.Response`` with a complete body, so headers and body leave together (a split write
costs ~40 ms under Nagle + delayed ACK).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Protocol, Sequence

import numpy as np
from aiohttp import web

from superserve import __version__
from superserve.serving.auth import UNAUTHORIZED, BearerAuth
from superserve.serving.codec import (CLASS, INPUT_NAME, LOGITS, ApiError, InputCodec, RequestOptions,
                                      class_index, model_config, model_metadata, result_error,
                                      result_parameters)
from superserve.serving.dashboard import STATIC_PATHS, Dashboard
from superserve.serving.metrics import CONTENT_TYPE_LATEST
from superserve.serving.model_info import ModelInfo
from superserve.serving.router import InferResult, Origin, Router

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "parameters"]
# No token needed: the probes, and the dashboard's static files (no data; see dashboard.py).
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"}) | STATIC_PATHS


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


class ModelRouter(Protocol):
    """What the REST and gRPC APIs ask of a model's router: the in-process
    :class:`~superserve.serving.router.Router`, or a front end's link to the scheduler
    process (``superserve.serving.frontend.SchedulerLink``)."""

    @property
    def ready(self) -> bool: ...
    def calibration_info(self) -> dict[str, Any]: ...
    async def infer(self, row: bytes, slo_ms: float, min_accuracy: float = 0.0, *, strict: bool = False,
                    origin: Origin | None = None) -> InferResult: ...


class RequestMetrics(Protocol):
    """What the APIs count into: the refusals they answer themselves, and the /metrics page
    (:class:`~superserve.serving.metrics.ServingMetrics`, or a front end's local counts)."""

    def refused(self, status: int) -> None: ...
    def render(self) -> bytes: ...


def error_body(exc: ApiError, metrics: RequestMetrics | None = None) -> bytes:
    """The JSON body of an error answer (status ``exc.status``), its refusal counted."""
    if metrics is not None and exc.outcome is None:  # outcomes are counted by the router
        metrics.refused(exc.status)
    body: dict[str, Any] = {"error": exc.message}
    if exc.outcome is not None:
        body["outcome"] = exc.outcome.label
    return json.dumps(body).encode()


def _error(exc: ApiError, metrics: RequestMetrics | None = None) -> web.Response:
    return web.Response(status=exc.status, body=error_body(exc, metrics), content_type="application/json")


@dataclass
class ServedModel:
    """One model a server serves: what it is, its router (queue and policy), its input codec
    and its metrics. A server of several SuperNets (superserve/serving/multi.py) has one per
    bundle; the front ends pick it by the request's model name."""

    info: ModelInfo
    router: ModelRouter
    codec: InputCodec
    metrics: RequestMetrics
    # The metadata and config answers, each API in its own encoding (REST: model_metadata's
    # dict and model_config as JSON bytes; gRPC: its protobuf messages), filled by the API.
    metadata: Any = None
    config: Any = None


def unknown_model(name: Any, served: Sequence[str]) -> ApiError:
    return ApiError(404, f"unknown model {name!r}; this server serves {', '.join(repr(n) for n in served)}")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NOT_LIVE = ("no worker is alive and none will be restarted (restarts off, or a slot given up with no "
            "cool-down); restart the server and read its log for the workers' error")


class RestApi:
    def __init__(self, info: ModelInfo, router: ModelRouter, codec: InputCodec, metrics: RequestMetrics,
                 max_request_bytes: int, auth: BearerAuth | None = None, read_timeout_s: float = 10.0,
                 live: Callable[[], bool] = lambda: True, others: Sequence[ServedModel] = (),
                 render_metrics: Callable[[], bytes] | None = None) -> None:
        """``live``: False once no worker can come back (the supervisor's ``can_recover``).
        ``others``: the further models of a server of several SuperNets (the first is
        ``info``, ``router``, ``codec``, ``metrics``, which also count refusals of requests
        for no served model); ``render_metrics``: the ``/metrics`` page (default: ``metrics``')."""
        self.info, self.router, self.codec, self.metrics = info, router, codec, metrics
        self.models: dict[str, ServedModel] = {}
        for m in others:  # each front end its own copy: its own encoding of metadata and config
            self.models[m.info.name] = replace(m, metadata=model_metadata(m.info),
                                               config=json.dumps(model_config(m.info)).encode())
        self.render_metrics = render_metrics  # None: metrics.render (read when asked: a front end has none)
        self.auth = auth or BearerAuth(None)
        self.is_live = live
        self.read_timeout_s = read_timeout_s
        self.max_request_bytes = max_request_bytes
        # ``POST /v2/admin/reload``: the server's hot reload (superserve/serving/reload.py).
        self.reloader: Callable[[object], Awaitable[dict[str, Any]]] | None = None
        # ``POST /v2/admin/workers`` / ``GET``: the worker count (superserve/serving/scaling.py).
        self.scaler: Callable[[object], Awaitable[dict[str, Any]]] | None = None
        self.workers_info: Callable[[], dict[str, Any]] | None = None
        self.dashboard: Dashboard | None = None  # built with the app
        self.set_model(info)
        self._server_metadata = json.dumps(
            {"name": "superserve", "version": __version__, "extensions": EXTENSIONS}).encode()

    def set_model(self, info: ModelInfo) -> None:
        """Serve the metadata and config of ``info`` (at start, and after a hot reload)."""
        self.info = info
        self._metadata = model_metadata(info)
        self._config = json.dumps(model_config(info)).encode()
        first = ServedModel(info, self.router, self.codec, self.metrics, self._metadata, self._config)
        self.models = {info.name: first, **{n: m for n, m in getattr(self, "models", {}).items()
                                            if m.router is not self.router}}
        if self.dashboard is not None:
            self.dashboard.set_model(info)

    def app(self) -> web.Application:
        middlewares = [self._check_token] if self.auth.enabled else []
        app = web.Application(client_max_size=self.max_request_bytes, middlewares=middlewares)
        m = "/v2/models/{model}"
        mv = "/v2/models/{model}/versions/{version}"
        app.router.add_get("/v2/health/live", self.live)
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2", self.server_metadata)
        app.router.add_get("/metrics", self.metrics_page)
        if isinstance(self.router, Router):  # the in-process router's records (not a front end's link)
            self.dashboard = Dashboard(self.info, self.router, self.codec.default_slo_ms)
            self.dashboard.add_routes(app)
        app.router.add_post("/v2/admin/reload", self.admin_reload)
        app.router.add_post("/v2/admin/workers", self.admin_workers)
        app.router.add_get("/v2/admin/workers", self.admin_workers_info)
        app.router.add_post("/v2/repository/index", self.repository_index)
        for base in (m, mv):
            app.router.add_get(base, self.model_metadata)
            app.router.add_get(base + "/ready", self.model_ready)
            app.router.add_get(base + "/config", self.model_config)
            app.router.add_post(base + "/infer", self.infer)
        return app

    @web.middleware
    async def _check_token(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or self.auth.allows(request.headers.get("Authorization")):
            return await handler(request)
        self.metrics.refused(401)
        resp = _json(401, {"error": UNAUTHORIZED})
        resp.headers["WWW-Authenticate"] = 'Bearer realm="superserve"'
        return resp

    # --- health and metadata -------------------------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200) if self.is_live() else _json(503, {"error": NOT_LIVE})

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if all(m.router.ready for m in self.models.values()) else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.Response(body=self._server_metadata, content_type="application/json")

    def model_for(self, name: str, version: str | None) -> ServedModel:
        """The served model a path names (ApiError 404 for another name or version)."""
        model = self.models.get(name)
        if model is None:
            raise unknown_model(name, list(self.models))
        if version not in (None, "", "1"):
            raise ApiError(404, f"model {name!r} has no version {version!r}; it has version '1'")
        return model

    def _check_model(self, request: web.Request) -> ServedModel:
        return self.model_for(request.match_info["model"], request.match_info.get("version"))

    @staticmethod
    def metadata_json(model: ServedModel) -> bytes:
        """Not a hot path: the live latency estimate joins the static metadata per call."""
        meta = dict(model.metadata)
        meta["parameters"] = {**meta.get("parameters", {}), **model.router.calibration_info()}
        return json.dumps(meta).encode()

    async def model_metadata(self, request: web.Request) -> web.Response:
        try:
            model = self._check_model(request)
        except ApiError as exc:
            return _error(exc)
        return web.Response(body=self.metadata_json(model), content_type="application/json")

    async def model_ready(self, request: web.Request) -> web.Response:
        try:
            model = self._check_model(request)
        except ApiError as exc:
            return _error(exc)
        return web.Response(status=200 if model.router.ready else 503)

    async def model_config(self, request: web.Request) -> web.Response:
        try:
            model = self._check_model(request)
        except ApiError as exc:
            return _error(exc)
        return web.Response(body=model.config, content_type="application/json")

    async def repository_index(self, request: web.Request) -> web.Response:
        """Triton's model repository index: every served model, READY or UNAVAILABLE."""
        return _json(200, [{"name": n, "version": "1", "state": "READY" if m.router.ready else "UNAVAILABLE"}
                           for n, m in self.models.items()])

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=(self.render_metrics or self.metrics.render)(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- admin -------------------------------------------------------------------------
    async def _admin_body(self, request: web.Request, key: str, shape: str) -> dict:
        """An admin call's JSON object body holding ``key`` (ApiError 408 if it does not
        arrive in time, 400 if it is not such an object)."""
        try:
            body = json.loads(await asyncio.wait_for(request.read(), self.read_timeout_s) or b"null")
        except asyncio.TimeoutError:
            raise ApiError(408, f"request body not received within {self.read_timeout_s:g} s") from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = None
        if not isinstance(body, dict) or key not in body:
            raise ApiError(400, f"the body must be a JSON object {shape}")
        return body

    async def admin_reload(self, request: web.Request) -> web.Response:
        """Hot reload: ``{"bundle": "<dir>"}``; 200 with what is served now, or 4xx/5xx with
        the reason (the previous bundle then serves on). Behind the token like everything
        but health."""
        try:
            if self.reloader is None:
                raise ApiError(501, "this server cannot reload its bundle")
            body = await self._admin_body(request, "bundle", '{"bundle": "<bundle directory>"}')
            result = await self.reloader(body["bundle"])
        except ApiError as exc:
            return _error(exc)
        return _json(200, result)

    async def admin_workers(self, request: web.Request) -> web.Response:
        """Scale: ``{"count": N}``; 200 with the workers serving now, or 4xx/5xx with why."""
        try:
            if self.scaler is None:
                raise ApiError(501, "this server cannot change its number of workers")
            body = await self._admin_body(request, "count", '{"count": N}')
            result = await self.scaler(body["count"])
        except ApiError as exc:
            return _error(exc)
        return _json(200, result)

    async def admin_workers_info(self, request: web.Request) -> web.Response:
        if self.workers_info is None:
            return _error(ApiError(501, "this server cannot report its workers"))
        return _json(200, self.workers_info())

    # --- inference -----------------------------------------------------------------------
    async def infer(self, request: web.Request) -> web.Response:
        metrics = self.metrics
        try:
            model = self._check_model(request)
            metrics = model.metrics
            try:
                # A client that promises a body and stalls would hold this handler (and its
                # connection) forever: aiohttp has no body timeout of its own.
                body = await asyncio.wait_for(request.read(), self.read_timeout_s)
            except web.HTTPRequestEntityTooLarge:
                raise ApiError(413, f"request body larger than {self.max_request_bytes} bytes") from None
            except asyncio.TimeoutError:
                resp = _error(ApiError(408, f"request body not received within {self.read_timeout_s:g} s "
                                            "(Content-Length larger than the body sent?)"), metrics)
                resp.force_close()  # the rest of that body must not be read as a new request
                return resp
            header, binary = self.split_body(request.headers.get(HEADER_LENGTH), body)
            row, options, outputs, binary_out, origin = self._parse(header, binary, model.codec)
            result = await model.router.infer(row, options.slo_ms, options.min_accuracy, strict=options.strict,
                                              origin=origin)
            if not result.ok:
                raise result_error(result)
        except ApiError as exc:
            return _error(exc, metrics)
        return self._answer(header.get("id"), result, outputs, binary_out, model.info)

    @staticmethod
    def split_body(length: str | None, body: bytes) -> tuple[dict[str, Any], memoryview | None]:
        """The JSON header and the binary tensor data of an infer body (``length``: the
        Inference-Header-Content-Length header, None without one)."""
        binary = None
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise ApiError(400, f"{HEADER_LENGTH} must be an integer, got {length!r}") from None
            if not 0 < n <= len(body):
                raise ApiError(400, f"{HEADER_LENGTH}={n} but the body has {len(body)} bytes")
            binary = memoryview(body)[n:]
            body = body[:n]
        try:
            header = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(header, dict):
            raise ApiError(400, "request body must be a JSON object with an 'inputs' list")
        return header, binary

    def _parse(self, header: dict[str, Any], binary: memoryview | None, codec: InputCodec | None = None
               ) -> tuple[bytes, RequestOptions, tuple[str, ...], dict[str, bool], Origin]:
        codec = codec or self.codec
        inputs = header.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise ApiError(400, f"'inputs' must be a list with exactly one tensor named {INPUT_NAME!r}")
        tensor = inputs[0]
        datatype = codec.check_header(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"))
        tparams = tensor.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise ApiError(400, "input parameters must be an object")
        size = tparams.get("binary_data_size")
        if size is not None:
            if binary is None:
                raise ApiError(400, f"binary_data_size given but no {HEADER_LENGTH} header")
            if type(size) is not int or size != len(binary):
                raise ApiError(400, f"binary_data_size={size!r} but {len(binary)} binary bytes follow the header")
            row = codec.decode_raw(datatype, binary)
        elif "data" in tensor:
            row = codec.decode_values(datatype, tensor["data"])
        else:
            raise ApiError(400, "input has neither 'data' nor parameters.binary_data_size")
        params = header.get("parameters")
        options = codec.options(params)
        binary_default = bool(isinstance(params, dict) and params.get("binary_data_output"))
        outs = header.get("outputs")
        if outs is None:
            names, binary_out = codec.requested_outputs([]), {}
        else:
            if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
                raise ApiError(400, "'outputs' must be a list of objects with a 'name'")
            names = codec.requested_outputs([o.get("name") for o in outs])
            binary_out = {o.get("name"): bool((o.get("parameters") or {}).get("binary_data", binary_default))
                          for o in outs if isinstance(o.get("parameters") or {}, dict)}
        return (row, options, names, {n: binary_out.get(n, binary_default) for n in names},
                Origin(header.get("id"), datatype, tensor.get("shape")))

    def _answer(self, request_id: Any, result: InferResult, names: tuple[str, ...],
                binary: dict[str, bool], info: ModelInfo | None = None) -> web.Response:
        body, content_type, headers = self.answer_parts(request_id, result, names, binary, info)
        return web.Response(body=body, content_type=content_type, headers=headers)

    def answer_parts(self, request_id: Any, result: InferResult, names: tuple[str, ...],
                     binary: dict[str, bool], info: ModelInfo | None = None
                     ) -> tuple[bytes, str, dict[str, str] | None]:
        """An answer's body, content type and extra headers (the binary extension's header
        length when any output is binary)."""
        info = info or self.info
        outputs, blobs = [], []
        logits = result.logits or b""
        for name in names:
            values: Callable[[], list[Any]]
            spec: dict[str, Any]
            if name == LOGITS:
                raw = logits
                spec = {"name": LOGITS, "datatype": "FP32", "shape": [1, info.num_classes]}
                values = lambda: np.frombuffer(logits, dtype="<f4").tolist()  # noqa: E731
            else:
                idx = class_index(logits)
                raw = np.array([idx], dtype="<i8").tobytes()
                spec = {"name": CLASS, "datatype": "INT64", "shape": [1, 1]}
                values = lambda: [idx]  # noqa: E731
            if binary[name]:
                spec["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            else:
                spec["data"] = values()
            outputs.append(spec)
        body: dict[str, Any] = {"model_name": info.name, "model_version": "1",
                                "parameters": result_parameters(result), "outputs": outputs}
        if isinstance(request_id, str):
            body["id"] = request_id
        head = json.dumps(body).encode()
        if not blobs:
            return head, "application/json", None
        return b"".join([head, *blobs]), "application/octet-stream", {HEADER_LENGTH: str(len(head))}
