"""Starting real servers for the demo and the live benchmark.

Several servers can be started at once and used one after another: start-up (spawning
workers, loading and warming the SuperNet) dominates a short demo, so overlapping it saves
minutes, and an idle server costs no CPU while another one is measured.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from superserve.serving.config import ServeConfig


@dataclass
class LiveServer:
    """A server subprocess started from a :class:`ServeConfig`."""

    config: ServeConfig
    process: subprocess.Popen
    ready_file: Path
    log_path: Path
    info: dict | None = None

    @property
    def url(self) -> str:
        assert self.info is not None, "server not ready yet"
        return f"http://{self.config.host}:{self.info['http_port']}"

    @property
    def grpc_port(self) -> int | None:
        return None if self.info is None else self.info.get("grpc_port")

    def poll_ready(self) -> bool:
        if self.info is not None:
            return True
        if self.process.poll() is not None:
            raise RuntimeError(f"server ({self.config.policy}) exited with {self.process.returncode} before it was "
                               f"ready; its log:\n{self.log_tail()}")
        if self.ready_file.exists():
            self.info = json.loads(self.ready_file.read_text())
            return True
        return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the server drains and stops its workers
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_server(config: ServeConfig, workdir: str | Path | None = None) -> LiveServer:
    """Spawn ``superserve serve`` for ``config`` on free ports (returns at once; see
    :func:`wait_ready`)."""
    work = Path(workdir or tempfile.mkdtemp(prefix="superserve-"))
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{config.policy}-{config.subnet or 'all'}".replace("+", "p").replace("/", "_")
    ready = work / f"{tag}.ready.json"
    ready.unlink(missing_ok=True)
    cfg = replace(config, http_port=0, grpc_port=0 if config.grpc_port is not None else None,
                  ready_file=str(ready))
    cfg_path = work / f"{tag}.config.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    log = work / f"{tag}.log"
    code = ("import sys; from superserve.serving.config import ServeConfig; from superserve.serving.server import run; "
            f"sys.exit(run(ServeConfig.from_file({str(cfg_path)!r}).validate()))")
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    return LiveServer(cfg, proc, ready, log)


def wait_ready(servers: list[LiveServer], timeout_s: float = 180.0) -> None:
    t_end = time.monotonic() + timeout_s
    while not all(s.poll_ready() for s in servers):
        if time.monotonic() > t_end:
            late = [s.config.policy for s in servers if s.info is None]
            raise TimeoutError(f"servers {late} not ready after {timeout_s:.0f} s")
        time.sleep(0.1)
