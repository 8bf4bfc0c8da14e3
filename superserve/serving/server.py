"""One server process: workers, router, REST and gRPC front ends, graceful shutdown.

Start-up order: the HTTP server comes up first (live answers at once, ready says 503), the
workers load and warm in parallel, and readiness (plus the optional ready file) follows
only when every worker is warm. SIGTERM / SIGINT stop intake, let queued requests finish for
up to ``drain_timeout_s`` (the rest are answered 503), stop the workers and exit 0.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import ssl
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from superserve.scheduling import make_policy
from superserve.scheduling.calibration import CalibratedPlanner
from superserve.scheduling.policy import Policy, PolicyKind, PolicyOptions
from superserve.serving.auth import BearerAuth
from superserve.serving.codec import ApiError, InputCodec
from superserve.serving.config import ServeConfig, model_configs
from superserve.serving.events import EventLog
from superserve.serving.logs import configure as configure_logging
from superserve.serving.logs import log
from superserve.serving.metrics import ModelsMetrics, ServingMetrics
from superserve.serving.model_info import ModelInfo, read_model_info
from superserve.serving.executor import Executor, make_executor
from superserve.serving.reload import Reloader
from superserve.serving.multi import ModelMux
from superserve.serving.pool import WorkerPool
from superserve.serving.rest import RestApi, ServedModel
from superserve.serving.router import Router
from superserve.serving.scaling import Scaler
from superserve.serving.supervisor import Supervisor
from superserve.scheduling.conventions import default_slo_ms

if TYPE_CHECKING:
    import grpc

    from superserve.serving.grpc_api import GrpcApi

    from superserve.scheduling.profile import LatencyProfile

WARMUP_TIMEOUT_S = 300.0


def build_policy(config: ServeConfig, info: ModelInfo, profile: LatencyProfile | None = None,
                 overhead_ms: float | None = None) -> Policy:
    """The configured policy on ``profile`` (default: the served one) planning with
    ``overhead_ms`` per batch (default: the configured one). Raises ValueError naming the
    setting at fault (an unknown policy parameter, a value the policy refuses)."""
    params = dict(config.policy_params)
    params.setdefault("quantile", config.quantile)
    params.setdefault("overhead_ms", config.overhead_ms)
    if overhead_ms is not None:
        params["overhead_ms"] = max(float(params["overhead_ms"]), overhead_ms)
    kind = PolicyKind.parse(config.policy)
    if kind.needs_subnet:
        if config.subnet not in info.subnet_ids:
            raise ValueError(f"--subnet {config.subnet!r} is not a served SubNet; choose one of "
                             f"{info.subnet_ids}")
        params["subnet_id"] = config.subnet
    if kind is PolicyKind.INFAAS and config.min_accuracy is not None:
        params["min_accuracy"] = config.min_accuracy
    profile = profile if profile is not None else info.profile
    try:
        return make_policy(config.policy, profile, **params)
    except TypeError as exc:
        accepted = _policy_parameters(config.policy, profile, params)
        unknown = sorted(set(config.policy_params) - accepted)
        if unknown:
            raise ValueError(f"policy_params: {unknown} not parameters of policy {config.policy!r}; it takes "
                             f"{sorted(accepted - {'subnet_id'})}") from None
        raise ValueError(f"policy_params {config.policy_params}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"policy {config.policy!r} with policy_params {config.policy_params}: {exc}") from None


def _policy_parameters(name: str, profile: LatencyProfile, params: dict[str, object]) -> set[str]:
    """The keyword parameters policy ``name`` accepts: its class's own (from its signature)
    and the settings every policy shares (:class:`PolicyOptions`)."""
    required = {k: params[k] for k in ("subnet_id",) if k in params}
    cls = type(make_policy(name, profile, **required))
    own = {p.name for p in inspect.signature(cls.__init__).parameters.values()
           if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "profile", "options")}
    return own | {f.name for f in fields(PolicyOptions)}


def build_planner(config: ServeConfig, info: ModelInfo, now: float = 0.0) -> CalibratedPlanner:
    """The calibrated planner: the policy rebuilt from the profile rescaled to this host.
    The simulator builds the very same object for its twin of a live run."""
    base = config.policy_params.get("overhead_ms", config.overhead_ms)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not 0 <= base < 10_000:
        raise ValueError(f"policy_params overhead_ms must be a number of ms in [0, 10000), not {base!r}")
    base = float(base)
    return CalibratedPlanner(info.profile, lambda prof, over: build_policy(config, info, prof, over),
                             config.calibration_config(), base_overhead_ms=base, enabled=config.calibrate,
                             now=now)


def _log(msg: str, level: int = logging.INFO) -> None:
    log(level, msg)


async def serve(config: ServeConfig) -> int:
    """Run a server until SIGTERM/SIGINT; returns the exit code."""
    config.validate()
    loop = asyncio.get_running_loop()
    # Several SuperNets in one server (superserve/serving/multi.py): one configuration, model
    # info, planner, router, codec and metrics per bundle; one worker pool holding them all.
    configs = model_configs(config)
    infos = [read_model_info(c) for c in configs]
    info = infos[0]
    planners = [build_planner(c, i, time.monotonic()) for c, i in zip(configs, infos)]
    planner = planners[0]
    policy = planner.policy
    slos = [config.slo_ms if config.slo_ms is not None else default_slo_ms(i.profile) for i in infos]
    slo_ms = slos[0]
    all_metrics = [ServingMetrics({s.id: s.accuracy for s in i.profile.subnets}, i.profile.max_batch)
                   for i in infos]
    metrics = all_metrics[0]
    events = EventLog(config.events_file)
    multi = len(infos) > 1
    # --- front door: instant workers (testing only; docs/frontdoor.md) ---
    if config.instant_workers:
        from superserve.serving.frontdoor import InstantPool

        pool: Executor = InstantPool(info, config)
    # --- end front door ---
    elif multi:
        pool = WorkerPool(info, config, infos[1:])
    else:
        pool = make_executor(info, config)
    routers = [Router(i, p, m, queue_capacity=config.queue_capacity, pool=pool, loop=loop,
                      late=config.late, response_margin_ms=config.response_margin_ms,
                      hang_timeout_s=config.hang_timeout_s, request_max_deaths=config.request_max_deaths,
                      events=events) for i, p, m in zip(infos, planners, all_metrics)]
    router = routers[0]
    mux = ModelMux(routers, pool) if multi else None
    supervisor = Supervisor(mux or router, pool, config.restart_policy(), metrics, events, loop)
    for r in routers:
        r.start_activity_log()
    codecs = [InputCodec(i, c, s) for i, c, s in zip(infos, configs, slos)]
    codec = codecs[0]
    others = [ServedModel(i, r, c, m) for i, r, c, m in zip(infos[1:], routers[1:], codecs[1:], all_metrics[1:])]
    auth = BearerAuth(config.auth_token)
    warning = insecure_bind_warning(config)
    if warning is not None:
        events.emit("insecure_bind", warning, host=config.host, tls=config.tls)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    rest = RestApi(info, router, codec, metrics, config.max_request_bytes, auth,
                   config.read_timeout_s, live=supervisor.can_recover, others=others,
                   render_metrics=ModelsMetrics({i.name: m for i, m in zip(infos, all_metrics)}).render
                   if multi else None)
    grpc_api: list = []  # the gRPC front end, once started (its metadata follows a reload)

    def on_swap(new: ModelInfo) -> None:
        rest.set_model(new)
        if frontdoor is not None:  # front door: front ends restart on the new bundle, one at a time
            frontdoor.set_model(new)
        for api in grpc_api:
            api.set_model(new)

    reloader = Reloader(config, info, router, pool, supervisor, events, loop,
                        lambda new: build_planner(config, new, time.monotonic()), on_swap, WARMUP_TIMEOUT_S)
    if not multi:
        rest.reloader = reloader.reload
        scaler = Scaler(config, reloader, router, supervisor, events, WARMUP_TIMEOUT_S)
        rest.scaler, rest.workers_info = scaler.scale, scaler.info
    else:  # hot reload and scaling swap one bundle's workers: not (yet) a pool holding several
        async def one_bundle_only(_: object) -> dict:
            raise ApiError(501, f"this server serves {len(infos)} bundles on shared workers; hot reload and "
                                "scaling work on a server of one --bundle (not implemented for several)")
        rest.reloader = rest.scaler = one_bundle_only
    # handler_cancellation: aiohttp >= 3.9 no longer cancels a handler whose client went
    # away; without it a disconnected client's request would keep its queue slot and be run.
    runner = web.AppRunner(rest.app(), access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    # --- front door: N front-end processes take http_port; this process's own REST
    # (dashboard, metrics, admin) moves to a free port, named in the ready file ---
    frontdoor = None
    if config.frontends:
        from superserve.serving.frontdoor import FrontDoor

        frontdoor = FrontDoor(config, info, router, loop, events, slo_ms, live=supervisor.can_recover)
        frontdoor.reserve_port()
    # --- end front door ---
    site = web.TCPSite(runner, config.host, 0 if frontdoor is not None else config.http_port, backlog=1024,
                       ssl_context=_ssl_context(config))
    grpc_server: grpc.aio.Server | None = None
    try:
        await site.start()
        http_port = runner.addresses[0][1]
        ready_extra: dict = {}
        if frontdoor is not None:  # front door
            ready_extra["scheduler_http_port"] = http_port
            ready_extra["frontdoor_endpoint"] = frontdoor.endpoint
            http_port = frontdoor.port
            frontdoor.start()
            _log(f"front door: {config.frontends} front-end processes on port {http_port}; this process's "
                 f"dashboard, metrics and admin API on port {ready_extra['scheduler_http_port']}")
        grpc_port = None
        if frontdoor is not None:  # front door: the front ends serve gRPC too, on one shared port
            grpc_port = frontdoor.grpc_port
        elif config.grpc_port is not None:
            grpc_server, grpc_port, api = await _start_grpc(config, info, router, codec, metrics, auth, supervisor,
                                                            others)
            grpc_api.append(api)
        others_slo = [f"{i.name!r} (slo_ms={s:g}, {len(i.subnet_ids)} SubNets)" for i, s in zip(infos[1:], slos[1:])]
        _log(f"{'https' if config.tls else 'http'}://{config.host}:{http_port} grpc={grpc_port}"
             f"{' (TLS)' if config.tls else ''} model={info.name!r} "
             f"policy={policy!r} workers={config.workers}x{config.threads_per_worker} threads ({config.backend}), "
             f"slo_ms={slo_ms:g}, {len(info.subnet_ids)} SubNets, auth={'bearer' if auth.enabled else 'none'}; "
             + (f"also serving {', '.join(others_slo)} on the same workers (global EDF across models); "
                if multi else "")
             + "warming up")
        t0 = time.monotonic()
        pool.start(loop, supervisor)  # pool events pass through the supervisor to the router
        warm = asyncio.ensure_future((mux or router).wait_warm(WARMUP_TIMEOUT_S))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([warm, stopper], return_when=asyncio.FIRST_COMPLETED)
        if warm.done():
            warm.result()  # raises if a worker died during start-up
            await _admit_traffic(config, router, supervisor, pool, events, t0, mux)
            dash_port = ready_extra.get("scheduler_http_port", http_port)  # front door: the scheduler's port
            _log(f"live dashboard: {'https' if config.tls else 'http'}://{config.host}:{dash_port}/dashboard"
                 + ("#token=<token>" if auth.enabled else ""))
            if frontdoor is not None:  # front door: every front end bound and connected
                await frontdoor.wait_connected()
                frontdoor.broadcast_status()
                ready_extra["frontend_pids"] = frontdoor.frontend_pids
            if config.ready_file:
                _write_ready_file(Path(config.ready_file), http_port, grpc_port, pool, slo_ms, ready_extra)
            await stopper
        else:
            warm.cancel()
        events.emit("shutdown", "stopping: no new requests; draining the queue")
        await reloader.aclose()
        supervisor.stop()
        (mux or router).stop_intake()
        await (mux or router).drain(config.drain_timeout_s)
        if frontdoor is not None:  # front door: answers out, then the front ends stop
            await frontdoor.stop()
        return 0
    finally:
        if frontdoor is not None:
            await frontdoor.stop()
        supervisor.stop()
        await reloader.aclose()
        await reloader.pool.stop()  # the pool serving now (a hot reload may have replaced the first)
        reloader.pool.close()
        if grpc_server is not None:
            await grpc_server.stop(0.5)
        await runner.cleanup()
        events.emit("stopped", "stopped")
        events.close()


async def _start_grpc(config: ServeConfig, info: ModelInfo, router: Router, codec: InputCodec,
                      metrics: ServingMetrics, auth: BearerAuth, supervisor: Supervisor,
                      others: list[ServedModel] | None = None) -> tuple[grpc.aio.Server, int, GrpcApi]:
    import grpc

    from superserve.serving.grpc_api import GrpcApi

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", config.max_request_bytes),
                                      ("grpc.so_reuseport", 0)])
    api = GrpcApi(info, router, codec, metrics, auth, live=supervisor.can_recover, others=others or ())
    server.add_generic_rpc_handlers((api.handler(),))
    address = f"{config.host}:{config.grpc_port}"
    port = (server.add_secure_port(address, _grpc_credentials(config)) if config.tls
            else server.add_insecure_port(address))
    if port == 0:
        raise OSError(f"cannot bind gRPC to {config.host}:{config.grpc_port} (port in use?)")
    await server.start()
    return server, port, api


async def _admit_traffic(config: ServeConfig, router: Router, supervisor: Supervisor, pool: Executor,
                         events: EventLog, t0: float, mux: ModelMux | None = None) -> None:
    """Every worker is warm: arm restarts, check the profile against this host, say so."""
    supervisor.arm()  # from now on a dead worker is restarted
    if mux is not None:  # several models: each model's check in turn, then traffic to all
        await mux.admit(config.calibration_check_s > 0)
    elif config.calibration_check_s > 0:
        report = await router.check_profile()
        if report is not None and not config.calibrate:
            _log("calibration is off (--no-calibrate): planning on the profile as shipped")
    else:
        router.start_calibration()
    events.emit("server_ready", worker_pids=[w.pid for w in pool.workers], backend=pool.backend,
                workers=pool.describe())
    _log(f"ready in {time.monotonic() - t0:.1f} s (warm-up per worker: "
         f"{', '.join(f'{w.warmup_s:.1f} s' for w in pool.workers)})")


def insecure_bind_warning(config: ServeConfig) -> str | None:
    """What to shout at start when the server is reachable from other machines without a
    token (None: loopback only, or a token is required)."""
    if config.loopback or config.auth_token:
        return None
    return (f"WARNING: listening on {config.host}, reachable from other machines, WITHOUT an auth token: "
            "anyone who can reach this port can run the model and read its metrics. Set SUPERSERVE_AUTH_TOKEN "
            f"{'' if config.tls else '(and tls_cert / tls_key) '}or bind 127.0.0.1")


def _ssl_context(config: ServeConfig) -> ssl.SSLContext | None:
    """The REST server's TLS context from the configured PEM certificate and key (None: plain HTTP)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"cannot load TLS certificate {config.tls_cert!r} / key {config.tls_key!r}: {exc}") from None
    return ctx


def _grpc_credentials(config: ServeConfig) -> grpc.ServerCredentials:
    import grpc

    assert config.tls_cert is not None and config.tls_key is not None
    return grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])


def _write_ready_file(path: Path, http_port: int, grpc_port: int | None, pool: Executor,
                      slo_ms: float, extra: dict | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "http_port": http_port, "grpc_port": grpc_port,
                               "worker_pids": [w.pid for w in pool.workers], "slo_ms": slo_ms, **(extra or {})}))
    tmp.replace(path)  # atomic: a reader never sees half a file


def run(config: ServeConfig) -> int:
    configure_logging(config.log_format)
    try:
        return asyncio.run(serve(config))
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        _log(f"error: {exc}", logging.ERROR)
        return 2
