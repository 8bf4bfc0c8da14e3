"""The client's KServe v2 REST transport: urllib3 (sync) and aiohttp (async).

Requests use the binary tensor extension (``superserve.loadgen.kserve``: a JSON header, then
the raw image bytes) and ask for binary outputs, so no image or logit travels as JSON text.
Both sides keep connections open between calls (urllib3's pool checks a pooled connection is
still up before reusing it; aiohttp's connector the same), and neither retries: an infer call
is not idempotent, and the caller decides whether a shed or rejected request is worth
sending again.

urllib3 is the sync side because it is the pooled, thread-safe HTTP/1.1 client the Python
field builds on (requests sits on it): one ``Client`` can serve many threads.
"""
from __future__ import annotations

import json
import ssl
import time
from typing import Any

import aiohttp
import urllib3

from superserve.client.errors import ConnectionFailed, ServerError, Timeout, http_error
from superserve.client.prediction import Prediction, as_image, error_text, prediction, rest_outputs
from superserve.loadgen.kserve import HEADER_LENGTH, encode_binary_request, infer_path


def infer_body(image: Any, params: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one binary-extension infer request that asks for binary outputs."""
    body, head_len = encode_binary_request(as_image(image), parameters={**params, "binary_data_output": True})
    return body, {HEADER_LENGTH: str(head_len), "Content-Type": "application/octet-stream"}


def infer_answer(status: int, length: str | None, body: bytes, latency_ms: float) -> Prediction:
    if status != 200:
        raise http_error(status, *error_text(body))
    try:
        header_length = int(length) if length is not None else None
    except ValueError:
        raise ServerError(f"the server sent {HEADER_LENGTH}: {length!r}, not a length") from None
    params, outputs = rest_outputs(body, header_length)
    return prediction(params, outputs, latency_ms)


def health_answer(status: int, body: bytes) -> bool:
    """200: yes; 503: no; anything else is an error (e.g. 401 from a proxy)."""
    if status in (200, 503):
        return status == 200
    raise http_error(status, *error_text(body))


def json_answer(status: int, body: bytes) -> dict[str, Any]:
    if status != 200:
        raise http_error(status, *error_text(body))
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServerError(f"the server's answer is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ServerError("the server's answer is not a JSON object")
    return data


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate-verifying TLS: ``ca_file`` (PEM) or the system's trusted CAs."""
    return ssl.create_default_context(cafile=ca_file)


class RestApi:
    """Blocking REST calls over one urllib3 connection pool (thread-safe)."""

    def __init__(self, *, base_url: str, model: str, headers: dict[str, str], timeout_s: float,
                 ca_file: str | None, max_connections: int) -> None:
        self.model, self.timeout_s, self._headers = model, timeout_s, headers
        tls = {"ssl_context": ssl_context(ca_file)} if base_url.startswith("https:") else {}
        # block=True: more threads than connections wait for one rather than open extra ones.
        self._pool = urllib3.connection_from_url(base_url, maxsize=max_connections, block=True, retries=False,
                                                 **tls)

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout_s: float | None = None) -> tuple[int, Any, bytes]:
        exc_mod = urllib3.exceptions
        timeout = timeout_s or self.timeout_s
        try:
            r = self._pool.urlopen(method, path, body=body, headers={**self._headers, **(headers or {})},
                                   timeout=urllib3.Timeout(total=timeout), pool_timeout=timeout,
                                   retries=False, redirect=False, preload_content=True)
        except exc_mod.NewConnectionError as exc:  # before TimeoutError: urllib3 derives one from the other
            raise ConnectionFailed(f"cannot connect to {self._pool.host}:{self._pool.port}: {exc}") from None
        except (exc_mod.TimeoutError, exc_mod.EmptyPoolError):
            raise Timeout(f"no answer from {self._pool.host}:{self._pool.port} within {timeout:g} s") from None
        except (exc_mod.HTTPError, OSError) as exc:
            raise ConnectionFailed(f"connection to {self._pool.host}:{self._pool.port} failed: {exc}") from None
        return r.status, r.headers, r.data

    def infer(self, image: Any, params: dict[str, Any], timeout_s: float | None) -> Prediction:
        body, headers = infer_body(image, params)
        t0 = time.perf_counter()
        status, h, data = self._request("POST", infer_path(self.model), body, headers, timeout_s)
        return infer_answer(status, h.get(HEADER_LENGTH), data, (time.perf_counter() - t0) * 1000.0)

    def health(self, which: str) -> bool:
        status, _, body = self._request("GET", f"/v2/health/{which}")
        return health_answer(status, body)

    def model_metadata(self) -> dict[str, Any]:
        status, _, body = self._request("GET", f"/v2/models/{self.model}")
        return json_answer(status, body)

    def close(self) -> None:
        self._pool.close()


class AsyncRestApi:
    """REST calls on asyncio over one aiohttp session, opened on first use (inside the loop)."""

    def __init__(self, *, base_url: str, model: str, headers: dict[str, str], timeout_s: float,
                 ca_file: str | None, max_connections: int) -> None:
        self.base_url, self.model, self.timeout_s, self._headers = base_url.rstrip("/"), model, timeout_s, headers
        self._ssl = ssl_context(ca_file) if base_url.startswith("https:") else None
        self._max_connections = max_connections
        self._session: Any = None

    async def _request(self, method: str, path: str, body: bytes | None = None,
                       headers: dict[str, str] | None = None, timeout_s: float | None = None) -> tuple[int, Any, bytes]:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl if self._ssl else True)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        try:
            async with self._session.request(method, self.base_url + path, data=body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=timeout_s or self.timeout_s),
                                             allow_redirects=False) as r:
                return r.status, r.headers, await r.read()
        except TimeoutError:  # asyncio's and aiohttp's timeouts both derive from it
            raise Timeout(f"no answer from {self.base_url} within {timeout_s or self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(f"connection to {self.base_url} failed: {exc}") from None

    async def infer(self, image: Any, params: dict[str, Any], timeout_s: float | None) -> Prediction:
        body, headers = infer_body(image, params)
        t0 = time.perf_counter()
        status, h, data = await self._request("POST", infer_path(self.model), body, headers, timeout_s)
        return infer_answer(status, h.get(HEADER_LENGTH), data, (time.perf_counter() - t0) * 1000.0)

    async def health(self, which: str) -> bool:
        status, _, body = await self._request("GET", f"/v2/health/{which}")
        return health_answer(status, body)

    async def model_metadata(self) -> dict[str, Any]:
        status, _, body = await self._request("GET", f"/v2/models/{self.model}")
        return json_answer(status, body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
