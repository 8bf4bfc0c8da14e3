"""`superserve serve`: the typer command (mounted by superserve/cli.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer


def serve_command(
    bundle: Optional[list[str]] = typer.Option(None, help="SuperNet bundle directory, or the name of a "
                                                      "shipped one: vit (default: the embedded conv SuperNet). "
                                                      "Repeat to serve several SuperNets on the same workers, "
                                                      "each as its own model (NAME=DIR names it; default: the "
                                                      "shipped name or the directory's; docs/serving.md)"),
    profile: Optional[Path] = typer.Option(None, help="latency profile (default: BUNDLE/profile.json)"),
    policy: Optional[str] = typer.Option(None, help="slackfit | maxbatch | maxacc | clipper+ | infaas (default slackfit)"),
    subnet: Optional[str] = typer.Option(None, help="the fixed SubNet id of clipper+"),
    min_accuracy: Optional[float] = typer.Option(None, help="INFaaS's accuracy floor"),
    device: Optional[str] = typer.Option(None, help="cpu (default), cuda (every visible GPU, one worker per "
                                                    "GPU unless --workers) or cuda:N (every worker on GPU N)"),
    workers: Optional[int] = typer.Option(None, help="worker processes (default 1; on cuda one per GPU)"),
    backend: Optional[str] = typer.Option(None, help="where workers run: local (default: processes on this machine) "
                                                     "or ray (one Ray actor per worker over a Ray cluster's nodes; "
                                                     "docs/ray.md)"),
    address: Optional[str] = typer.Option(None, help="with --backend ray: the cluster, auto (default: the one "
                                                     "`ray start` began on this machine), HOST:PORT, or local (a "
                                                     "private single-node instance)"),
    threads_per_worker: Optional[int] = typer.Option(None, help="torch threads per worker (default 1)"),
    host: Optional[str] = typer.Option(None, help="bind address (default 127.0.0.1: loopback only)"),
    http_port: Optional[int] = typer.Option(None, help="HTTP port (default 8000; 0: any free port)"),
    grpc_port: Optional[int] = typer.Option(None, help="gRPC port (default 8001; 0: any free port; -1: no gRPC)"),
    slo_ms: Optional[float] = typer.Option(None, help="deadline of requests without slo_ms (default: 2 x p50 of "
                                                      "the largest SubNet at the largest batch)"),
    queue_capacity: Optional[int] = typer.Option(None, help="EDF queue bound; beyond it 429 (default 1024)"),
    late: Optional[str] = typer.Option(None, help="shed (default): answer 504 at once when a deadline cannot be "
                                                  "met; serve: run it anyway, answer late"),
    response_margin_ms: Optional[float] = typer.Option(None, help="plan each request to finish this long before "
                                                                  "its deadline, for the path outside the router "
                                                                  "(default 5; capped at slo_ms / 4)"),
    model_name: Optional[str] = typer.Option(None, help="model name clients address (default 'supernet')"),
    config: Optional[Path] = typer.Option(None, help="JSON or TOML file with any of these settings "
                                                     "(keys as in superserve.serving.ServeConfig); "
                                                     "SUPERSERVE_<SETTING> variables win over it, flags over both"),
    ready_file: Optional[Path] = typer.Option(None, help="write JSON {pid, http_port, grpc_port, worker_pids} "
                                                         "here once every worker is warm"),
    auth_token: Optional[str] = typer.Option(None, show_default=False,
                                             help="require 'Authorization: Bearer TOKEN' on every endpoint but "
                                                  "health (prefer env SUPERSERVE_AUTH_TOKEN: flags show in `ps`)"),
    restart: Optional[bool] = typer.Option(None, "--restart/--no-restart",
                                           help="restart dead workers with back-off (default: on)"),
    events_file: Optional[Path] = typer.Option(None, help="append lifecycle events (worker died, restarted, "
                                                          "ready) here as JSON lines"),
    calibrate: Optional[bool] = typer.Option(None, "--calibrate/--no-calibrate",
                                             help="plan on this host's measured batch times (default: on); off: "
                                                  "measure and report only"),
    standby_workers: Optional[int] = typer.Option(None, help="warm standby workers that take a dead worker's slot "
                                                             "at once (default 0)"),
    calibration_check_s: Optional[float] = typer.Option(None, help="seconds of the start-up check of the profile "
                                                                   "against this host (default 2; 0: none)"),
    tls_cert: Optional[Path] = typer.Option(None, help="PEM certificate (chain): serve HTTPS and gRPC over TLS "
                                                       "(with --tls-key)"),
    tls_key: Optional[Path] = typer.Option(None, help="PEM private key of --tls-cert"),
    log_format: Optional[str] = typer.Option(None, help="stderr log lines: text (default) or json (one object "
                                                        "per line: ts, level, logger, msg, event fields)"),
    frontends: Optional[int] = typer.Option(None, help="REST front-end processes sharing --http-port (SO_REUSEPORT), "
                                                       "passing decoded requests to this process over Unix sockets "
                                                       "(default 0: one process does everything; docs/frontdoor.md)"),
) -> None:
    """Serve a SuperNet over KServe v2 REST and gRPC, choosing SubNet and batch per decision.
    Settings: flags > SUPERSERVE_<SETTING> environment variables > --config file > defaults."""
    from superserve.device import check_device, cuda_device_count, default_workers
    from superserve.serving.config import ServeConfig
    from superserve.serving.server import run

    overrides: dict[str, Any] = dict(
        bundle=str(Path(bundle[0])) if bundle and len(bundle) == 1 else None,
        bundles=list(bundle) if bundle and len(bundle) > 1 else None,
        profile=str(profile) if profile else None, policy=policy,
        subnet=subnet, min_accuracy=min_accuracy, device=device, workers=workers, threads_per_worker=threads_per_worker,
        backend=backend, ray_address=address,
        host=host, http_port=http_port, grpc_port=grpc_port, slo_ms=slo_ms, queue_capacity=queue_capacity,
        late=late, response_margin_ms=response_margin_ms, model_name=model_name,
        ready_file=str(ready_file) if ready_file else None,
        auth_token=auth_token or None, restart=restart, events_file=str(events_file) if events_file else None,
        calibrate=calibrate, calibration_check_s=calibration_check_s, standby_workers=standby_workers,
        tls_cert=str(tls_cert) if tls_cert else None, tls_key=str(tls_key) if tls_key else None,
        log_format=log_format, frontends=frontends)
    try:
        cfg = ServeConfig.from_sources(config, os.environ, **overrides)
        if cfg.grpc_port is not None and cfg.grpc_port < 0:
            cfg.grpc_port = None
        cfg.validate()
        dev = check_device(cfg.device)  # is CUDA there? (asked in a child process: no torch here)
        if dev.is_cuda and not _workers_given(workers, config, os.environ):
            cfg.workers = default_workers(dev, cuda_device_count())
    except (OSError, ValueError, TypeError) as exc:
        typer.echo(f"superserve serve: {exc}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run(cfg))


def _workers_given(flag: Optional[int], config: Optional[Path], environ: Any) -> bool:
    """Whether the worker count was set by flag, SUPERSERVE_WORKERS or the --config file."""
    from superserve.serving.config import ENV_PREFIX, _file_settings

    if flag is not None or f"{ENV_PREFIX}WORKERS" in environ:
        return True
    return config is not None and "workers" in _file_settings(config)


def reload_command(
    bundle: Path = typer.Argument(..., help="the new bundle directory (as the server's file system sees it; "
                                            "a relative path is made absolute here)"),
    url: str = typer.Option("http://127.0.0.1:8000", help="the running server's HTTP(S) URL"),
    auth_token: Optional[str] = typer.Option(None, show_default=False,
                                             help="the server's bearer token (default: env SUPERSERVE_AUTH_TOKEN)"),
    timeout_s: float = typer.Option(600.0, help="how long to wait for the new workers to load and warm up"),
) -> None:
    """Ask a running server to swap in a new bundle without dropping requests
    (POST /v2/admin/reload). Exit 0 once the new bundle serves; else the server's reason, exit 1."""
    token = auth_token or os.environ.get("SUPERSERVE_AUTH_TOKEN")
    path = str(bundle if bundle.is_absolute() or not bundle.exists() else bundle.resolve())
    body = _admin_call("reload", url, "/v2/admin/reload", {"bundle": path}, token, timeout_s)
    typer.echo(f"now serving {body.get('bundle')} ({len(body.get('subnets', []))} SubNets) on worker pids "
               f"{body.get('worker_pids')}; reload took {body.get('reload_s')} s")


def _admin_call(command: str, url: str, path: str, payload: dict | None, token: str | None,
                timeout_s: float) -> dict:
    """One admin call to a running server (POST ``payload`` as JSON, or GET without one): the
    answer's JSON object, or the server's reason on stderr and exit 1."""
    import json
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url.rstrip("/") + path, method="GET" if data is None else "POST",
                                 data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        typer.echo(f"superserve {command}: HTTP {exc.code}: {reason}", err=True)
        raise typer.Exit(1)
    except (urllib.error.URLError, OSError) as exc:
        typer.echo(f"superserve {command}: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1)


def workers_command(
    count: Optional[int] = typer.Argument(None, help="serve with this many workers (omit: show how many serve now)"),
    url: str = typer.Option("http://127.0.0.1:8000", help="the running server's HTTP(S) URL"),
    auth_token: Optional[str] = typer.Option(None, show_default=False,
                                             help="the server's bearer token (default: env SUPERSERVE_AUTH_TOKEN)"),
    timeout_s: float = typer.Option(600.0, help="how long to wait for new workers to load and warm up"),
) -> None:
    """Add or remove workers of a running server (POST /v2/admin/workers; GET without COUNT).
    Exit 0 once it serves with COUNT workers; else the server's reason, exit 1."""
    token = auth_token or os.environ.get("SUPERSERVE_AUTH_TOKEN")
    body = _admin_call("workers", url, "/v2/admin/workers", None if count is None else {"count": count},
                       token, timeout_s)
    took = f" (took {body['scale_s']} s)" if "scale_s" in body else ""
    typer.echo(f"{body.get('describe')}, {body.get('ready')} ready; pids {body.get('worker_pids')}{took}")
