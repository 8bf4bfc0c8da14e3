"""The client's KServe v2 gRPC transport: grpcio channels, blocking and asyncio.

One channel per client (HTTP/2: every call shares one connection). The image goes in
``raw_input_contents``, the outputs come back in ``raw_output_contents``. A failed call is
mapped by its status code and, when the server's router answered, the ``superserve-outcome``
trailing metadata (superserve/client/errors.py says why both are needed).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from superserve.client.errors import ConnectionFailed, ServerError, SuperserveError, grpc_error
from superserve.client.grpc_messages import SERVICE, message, parameter_value, set_parameter
from superserve.client.prediction import Prediction, as_image, prediction
from superserve.outcome import GRPC_OUTCOME_METADATA

_DTYPES = {"FP32": "<f4", "INT64": "<i8"}
_KSERVE = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8"}
# (request, response) message names of the RPCs the client makes
_RPCS = {"ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
         "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
         "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
         "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse")}


def infer_request(model: str, image: Any, params: dict[str, Any]) -> Any:
    arr = as_image(image)
    req = message("ModelInferRequest")(model_name=model)
    tensor = req.inputs.add()
    tensor.name, tensor.datatype = "input", _KSERVE[arr.dtype]
    tensor.shape.extend(arr.shape)
    req.raw_input_contents.append(arr.tobytes())
    for key, value in params.items():
        set_parameter(req.parameters[key], value)
    return req


def infer_answer(resp: Any, latency_ms: float) -> Prediction:
    raw = resp.raw_output_contents
    if len(raw) != len(resp.outputs):
        raise ServerError(f"the server sent {len(resp.outputs)} outputs but {len(raw)} raw contents")
    outputs = {out.name: np.frombuffer(data, dtype=_DTYPES.get(out.datatype, "<f4"))
               for out, data in zip(resp.outputs, raw)}
    params = {k: parameter_value(v) for k, v in resp.parameters.items()}
    return prediction(params, outputs, latency_ms)


def metadata_dict(resp: Any) -> dict[str, Any]:
    """The gRPC model metadata in the REST answer's form (gRPC's has no ``parameters``)."""
    def tensors(ts: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]
    return {"name": resp.name, "versions": list(resp.versions), "platform": resp.platform,
            "inputs": tensors(resp.inputs), "outputs": tensors(resp.outputs)}


def _mapped(exc: grpc.RpcError) -> SuperserveError:
    """The exception for a failed call. Blocking calls raise a ``grpc.Call``, asyncio ones an
    ``AioRpcError`` (not a ``grpc.Call``): both have code(), details(), trailing_metadata()."""
    code = exc.code() if hasattr(exc, "code") else None
    metadata = (exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None) or ()
    outcome = next((str(v) for k, v in metadata if k == GRPC_OUTCOME_METADATA), None)
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    return grpc_error(code.name if code is not None else "UNKNOWN", details, outcome)


def _credentials(ca_file: str | None) -> grpc.ChannelCredentials:
    """Certificate-verifying TLS: ``ca_file`` (PEM) or gRPC's default trusted roots."""
    return grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes() if ca_file else None)


class _Channel:
    """What both gRPC clients hold: the target, credentials, token metadata and timeout."""

    def __init__(self, *, target: str, model: str, token: str | None, timeout_s: float, tls: bool,
                 ca_file: str | None) -> None:
        self.target, self.model, self.timeout_s = target, model, timeout_s
        self.credentials = _credentials(ca_file) if tls else None
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def stubs(self, channel: Any) -> dict[str, Any]:
        return {name: channel.unary_unary(SERVICE + name, request_serializer=message(req).SerializeToString,
                                          response_deserializer=message(resp).FromString)
                for name, (req, resp) in _RPCS.items()}


class GrpcApi(_Channel):
    """Blocking gRPC calls over one channel (thread-safe)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._channel = (grpc.secure_channel(self.target, self.credentials) if self.credentials
                         else grpc.insecure_channel(self.target))
        self._stubs = self.stubs(self._channel)

    def _call(self, rpc: str, request: Any, timeout_s: float | None = None) -> Any:
        try:
            return self._stubs[rpc](request, timeout=timeout_s or self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _mapped(exc) from None
        except ValueError as exc:  # e.g. a closed channel
            raise ConnectionFailed(f"gRPC channel to {self.target}: {exc}") from None

    def infer(self, image: Any, params: dict[str, Any], timeout_s: float | None) -> Prediction:
        req = infer_request(self.model, image, params)
        t0 = time.perf_counter()
        resp = self._call("ModelInfer", req, timeout_s)
        return infer_answer(resp, (time.perf_counter() - t0) * 1000.0)

    def health(self, which: str) -> bool:
        rpc = "ServerReady" if which == "ready" else "ServerLive"
        resp = self._call(rpc, message(_RPCS[rpc][0])())
        return bool(resp.ready if which == "ready" else resp.live)

    def model_metadata(self) -> dict[str, Any]:
        return metadata_dict(self._call("ModelMetadata", message("ModelMetadataRequest")(name=self.model)))

    def close(self) -> None:
        self._channel.close()


class AsyncGrpcApi(_Channel):
    """gRPC calls on asyncio (grpc.aio) over one channel, opened on first use (inside the loop)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._channel: Any = None
        self._stubs: dict[str, Any] = {}

    async def _call(self, rpc: str, request: Any, timeout_s: float | None = None) -> Any:
        if self._channel is None:
            self._channel = (grpc.aio.secure_channel(self.target, self.credentials) if self.credentials
                             else grpc.aio.insecure_channel(self.target))
            self._stubs = self.stubs(self._channel)
        try:
            return await self._stubs[rpc](request, timeout=timeout_s or self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _mapped(exc) from None

    async def infer(self, image: Any, params: dict[str, Any], timeout_s: float | None) -> Prediction:
        req = infer_request(self.model, image, params)
        t0 = time.perf_counter()
        resp = await self._call("ModelInfer", req, timeout_s)
        return infer_answer(resp, (time.perf_counter() - t0) * 1000.0)

    async def health(self, which: str) -> bool:
        rpc = "ServerReady" if which == "ready" else "ServerLive"
        resp = await self._call(rpc, message(_RPCS[rpc][0])())
        return bool(resp.ready if which == "ready" else resp.live)

    async def model_metadata(self) -> dict[str, Any]:
        return metadata_dict(await self._call("ModelMetadata", message("ModelMetadataRequest")(name=self.model)))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
