"""``Client`` and ``AsyncClient``: a few obvious methods over the server's KServe v2 REST or
gRPC API, chosen by the URL's scheme.

    with superserve.Client("http://127.0.0.1:8000") as client:
        p = client.infer(image, slo_ms=30)
        p.class_index, p.subnet_id, p.accuracy, p.queue_ms

Images go channels first ([C, H, W], or [H, W] for one channel), of the model's input shape
(``model_metadata()["inputs"]``). Send raw uint8 pixels and the server normalises them with the
bundle's own per-channel mean and std (its data.json), or send float32 already normalised as
``(pixel / 255 - input_mean[c]) / input_std[c]``: a bundle with its own data describes this in
``model_metadata()["parameters"]`` (``input_mean``, ``input_std``, ``classes``; over gRPC the
same as JSON strings in the model config's parameters); Fashion-MNIST's bundles use 0.2860 /
0.3530.

``http://`` and ``https://`` speak REST, ``grpc://`` and ``grpcs://`` gRPC (the ``s``: TLS,
verified against ``ca_file`` or the system's trusted CAs). A missing port is the server's
default: 8000 for REST, 8001 for gRPC. Every failure raises a subclass of
:class:`~superserve.client.errors.SuperserveError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from superserve.client.prediction import Prediction, request_parameters

SCHEMES = {"http": ("rest", False, 8000), "https": ("rest", True, 8000),
           "grpc": ("grpc", False, 8001), "grpcs": ("grpc", True, 8001)}


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "rest" | "grpc"
    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"url {url!r}: the scheme must be one of {sorted(SCHEMES)} (e.g. http://127.0.0.1:8000 "
                             "or grpc://127.0.0.1:8001)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"url {url!r}: give the server's address only (scheme://host:port)")
        protocol, tls, default_port = SCHEMES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError as exc:
            raise ValueError(f"url {url!r}: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"url {url!r} names no host")
        return cls(protocol, tls, parts.hostname, port)

    @property
    def host_port(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _settings(url: str, model: str, token: str | None, timeout_s: float, ca_file: str | None,
              max_connections: int) -> tuple[Endpoint, dict[str, Any]]:
    """The endpoint and the transport's keyword arguments; ValueError on a bad setting."""
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
    if not (isinstance(max_connections, int) and 1 <= max_connections <= 1024):
        raise ValueError(f"max_connections must be an integer in [1, 1024], not {max_connections!r}")
    if token is not None and (not token or not all(33 <= ord(c) <= 126 for c in token)):
        raise ValueError("token must be visible ASCII without spaces (the server's --auth-token)")
    end = Endpoint.parse(url)
    if ca_file is not None and not end.tls:
        raise ValueError(f"ca_file is for TLS: use https:// or grpcs:// rather than {url!r}")
    if end.protocol == "rest":
        scheme = "https" if end.tls else "http"
        return end, dict(base_url=f"{scheme}://{end.host_port}", model=model, timeout_s=float(timeout_s),
                         headers={"Authorization": f"Bearer {token}"} if token else {}, ca_file=ca_file,
                         max_connections=max_connections)
    return end, dict(target=end.host_port, model=model, token=token, timeout_s=float(timeout_s), tls=end.tls,
                     ca_file=ca_file)


class Client:
    """A blocking client; thread-safe (one connection pool or gRPC channel, shared)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, model: str = "supernet", token: str | None = None,
                 timeout_s: float = 10.0, ca_file: str | None = None, max_connections: int = 16) -> None:
        """``token``: the server's bearer token; ``timeout_s``: per call (``infer`` can
        override it); ``ca_file``: PEM certificate(s) to trust for https:// / grpcs://;
        ``max_connections``: REST connections kept open (gRPC uses one)."""
        end, settings = _settings(url, model, token, timeout_s, ca_file, max_connections)
        self.url, self.model = url, model
        if end.protocol == "rest":
            from superserve.client.rest import RestApi

            self._api: Any = RestApi(**settings)
        else:
            from superserve.client.grpc_api import GrpcApi

            self._api = GrpcApi(**settings)

    def infer(self, image: Any, *, slo_ms: float | None = None, min_accuracy: float | None = None,
              strict: bool = False, timeout_s: float | None = None) -> Prediction:
        """Classify one image, channels first (float32 normalised, or uint8 raw pixels the
        server normalises with the bundle's mean and std; see ``as_image``).
        ``slo_ms``: the deadline (default: the server's); ``min_accuracy``: the least profiled
        accuracy wanted, best effort unless ``strict`` (then served by a SubNet reaching it or
        refused with AccuracyFloorUnmet)."""
        return self._api.infer(image, request_parameters(slo_ms, min_accuracy, strict), timeout_s)

    def server_ready(self) -> bool:
        """Every worker warm and accepting requests (``/v2/health/ready``, gRPC ServerReady)."""
        return self._api.health("ready")

    def server_live(self) -> bool:
        """The server runs and a worker is alive or coming back (``/v2/health/live``)."""
        return self._api.health("live")

    def model_metadata(self) -> dict[str, Any]:
        """The model's KServe metadata: name, versions, inputs, outputs (REST: also
        ``parameters``: SubNet count, latency calibration and, for a bundle with its own
        data.json, ``input_mean`` / ``input_std`` per channel and the ``classes`` names)."""
        return self._api.model_metadata()

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio client: the same methods as :class:`Client`, awaited. Connections open on
    the first call, inside the running loop; close with ``await aclose()`` or ``async with``."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, model: str = "supernet", token: str | None = None,
                 timeout_s: float = 10.0, ca_file: str | None = None, max_connections: int = 100) -> None:
        end, settings = _settings(url, model, token, timeout_s, ca_file, max_connections)
        self.url, self.model = url, model
        if end.protocol == "rest":
            from superserve.client.rest import AsyncRestApi

            self._api: Any = AsyncRestApi(**settings)
        else:
            from superserve.client.grpc_api import AsyncGrpcApi

            self._api = AsyncGrpcApi(**settings)

    async def infer(self, image: Any, *, slo_ms: float | None = None, min_accuracy: float | None = None,
                    strict: bool = False, timeout_s: float | None = None) -> Prediction:
        """As :meth:`Client.infer`."""
        return await self._api.infer(image, request_parameters(slo_ms, min_accuracy, strict), timeout_s)

    async def server_ready(self) -> bool:
        return await self._api.health("ready")

    async def server_live(self) -> bool:
        return await self._api.health("live")

    async def model_metadata(self) -> dict[str, Any]:
        return await self._api.model_metadata()

    async def aclose(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
