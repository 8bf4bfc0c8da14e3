"""Run `superserve serve` as a real subprocess from Python (tests, load client, demo).

    with ServerProcess(policy="slackfit", workers=2) as srv:
        srv.http_url        # "http://127.0.0.1:41873"
        srv.http_address    # "127.0.0.1:41873" (tritonclient.http's url form)
        srv.grpc_address    # "127.0.0.1:40211"

Ports default to 0 (the server binds free ones and reports them in its ready file), so
parallel servers never collide. ``start`` returns once every worker is warm (the server
writes the ready file only then) and raises with the server's log if it exits first.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from superserve.bundle_layout import resolve_bundle
from superserve.serving.config import ENV_PREFIX, ServeConfig
from superserve.serving.events import read_events

AUTH_ENV = "SUPERSERVE_AUTH_TOKEN"


class ServerProcess:
    def __init__(self, config: ServeConfig | None = None, *, startup_timeout_s: float = 180.0,
                 env: dict[str, str] | None = None, **settings: Any) -> None:
        """``settings`` are ServeConfig fields (bundle, policy, workers, ...), applied on top
        of ``config``. Unlike the CLI defaults, ports default to 0 (free ports)."""
        base: dict[str, Any] = dict(config.to_dict()) if config else {"http_port": 0, "grpc_port": 0}
        known = {f.name for f in fields(ServeConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"unknown server settings {unknown}; see superserve.serving.ServeConfig")
        base.update({k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()})
        if isinstance(base.get("bundle"), str):  # a shipped bundle's name ("vit") becomes its directory
            base["bundle"] = str(resolve_bundle(base["bundle"]))
        if isinstance(base.get("bundles"), list):  # several SuperNets: NAME=DIR or DIR, made absolute
            base["bundles"] = [_absolute_bundle(str(b)) for b in base["bundles"]]
        for key in ("bundle", "profile", "tls_cert", "tls_key"):  # the config file lives elsewhere
            if isinstance(base.get(key), str):
                base[key] = str(Path(base[key]).resolve())
        self.config = ServeConfig(**base).validate()
        self.startup_timeout_s = startup_timeout_s
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self._dir: Path | None = None
        self.events_path: Path | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "ServerProcess":
        self._dir = Path(tempfile.mkdtemp(prefix="superserve-"))
        ready = self._dir / "ready.json"
        cfg = ServeConfig(**{**self.config.to_dict(), "ready_file": str(ready),
                             "events_file": self.config.events_file or str(self._dir / "events.jsonl")})
        settings = cfg.to_dict()
        # The token travels in the environment, never in the config file on disk.
        token = settings.pop("auth_token", None)
        (self._dir / "config.json").write_text(json.dumps(settings))
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("OMP_NUM_THREADS", str(cfg.threads_per_worker))
        # The config file is the whole configuration: SUPERSERVE_* variables of this process
        # (which `superserve serve` would put above the file) must not change it.
        for var in [v for v in env if v.startswith(ENV_PREFIX)]:
            del env[var]
        if token:
            env[AUTH_ENV] = token
        self.events_path = Path(cfg.events_file or self._dir / "events.jsonl")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "superserve.cli", "serve", "--config", str(self._dir / "config.json")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"superserve serve exited with {self.proc.returncode} before it was "
                                   f"ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"superserve serve not ready after {self.startup_timeout_s:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        return self

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (graceful: drain, stop workers), then SIGKILL after ``timeout_s``.
        Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        if self._dir is not None and code == 0:
            shutil.rmtree(self._dir, ignore_errors=True)
        return code

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- where it is ---------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        assert self._dir is not None, "not started"
        return self._dir / "server.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def worker_pids(self) -> list[int]:
        """The current worker processes, slot by slot (a restarted worker's new pid once it
        is warm again; the dead pid until then)."""
        pids = list(self.info["worker_pids"])
        for e in self.events():
            if e["event"] == "worker_ready" and e.get("restarted"):
                pids[e["worker"]] = e["pid"]
        return pids

    def events(self) -> list[dict[str, Any]]:
        """The server's lifecycle events so far (superserve.serving.events)."""
        return read_events(self.events_path) if self.events_path else []

    @property
    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` header for this server's token ({} without auth)."""
        token = self.config.auth_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def slo_ms(self) -> float:
        """The default deadline the server applies to requests without slo_ms."""
        return float(self.info["slo_ms"])

    @property
    def http_address(self) -> str:
        return f"{self.config.host}:{self.info['http_port']}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.config.tls else 'http'}://{self.http_address}"

    @property
    def grpc_address(self) -> str:
        if self.info.get("grpc_port") is None:
            raise RuntimeError("this server runs without gRPC (grpc_port=None)")
        return f"{self.config.host}:{self.info['grpc_port']}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _absolute_bundle(arg: str) -> str:
    """A ``bundles`` entry with its directory absolute (a shipped bundle's name stays a name:
    it also names the model)."""
    name, sep, bundle = arg.partition("=") if "=" in arg else ("", "", arg)
    if not Path(bundle).exists():
        return arg
    return f"{name}{sep}{Path(bundle).resolve()}"


def start_server(**settings: Any) -> ServerProcess:
    """Start a server subprocess and return it once ready; call ``.stop()`` when done."""
    return ServerProcess(**settings).start()
