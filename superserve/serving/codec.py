"""Turning protocol tensors into the router's input rows, and answers into protocol terms.

Shared by the REST and gRPC front ends, so both accept and refuse exactly the same inputs.
One request carries one image:

* FP32, shape [1, C, H, W], [1, C*H*W], or (C = 1) [1, H, W]: the model's normalised input.
* UINT8, same shapes: raw pixels, normalised here as (x / 255 - mean[c]) / std[c] with the
  bundle's per-channel values (its data.json), or pixel_mean / pixel_std (ServeConfig) for a
  bundle without data.json.

* INT64 (token-id models, BERT), shape [1, L]: ids in [0, vocab_size), carried to the
  worker as float32 (exact below 2^24); the model rounds them back. Only INT64 is accepted.

Work per request is vectorised numpy over one image (validation of finiteness, the UINT8
conversion); a FP32 binary input is passed on as the very bytes that arrived.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from superserve.serving.config import ServeConfig
from superserve.serving.model_info import ModelInfo
from superserve.outcome import Outcome
from superserve.serving.router import InferResult

INPUT_NAME = "input"
LOGITS = "logits"
CLASS = "class_index"
OUTPUT_NAMES = (LOGITS, CLASS)


class ApiError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, ``grpc`` the gRPC code name.
    ``outcome``: the router's outcome when the router answered it (its status and gRPC code are
    the outcome's, superserve/outcome.py); None for a request refused before queueing."""

    # Refusals before queueing (invalid input, unknown model, too large) by HTTP status.
    _GRPC = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED"}

    def __init__(self, status: int, message: str, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome

    @property
    def grpc(self) -> str:
        code = self.outcome.grpc_code if self.outcome is not None else self._GRPC.get(self.status)
        return code or "UNKNOWN"


def result_error(result: InferResult) -> ApiError:
    """An outcome that is not an answer, as the error the front ends send."""
    status = result.outcome.http_status
    assert status is not None, f"{result.outcome!r} is not a server outcome"
    return ApiError(status, result.message, result.outcome)


@dataclass(frozen=True)
class RequestOptions:
    slo_ms: float
    min_accuracy: float
    strict: bool = False  # min_accuracy_strict: the floor is hard (422 rather than a less accurate answer)


class InputCodec:
    def __init__(self, info: ModelInfo, config: ServeConfig, default_slo_ms: float) -> None:
        self.info = info
        self.elements = info.input_elements
        c, h, w = info.input_shape
        self.tokens = info.input_datatype == "INT64"
        shapes = [(1, c, h, w), (1, c * h * w)]
        if c == 1 and not self.tokens:
            shapes.append((1, h, w))
        self.shapes = tuple(shapes)
        self._shape_text = " or ".join(str(list(s)) for s in self.shapes)
        if info.data is None:
            self.scale = np.float32(1.0 / (255.0 * config.pixel_std))
            self.offset = np.float32(config.pixel_mean / config.pixel_std)
        else:  # per channel, repeated over each channel's H x W pixels (NCHW order)
            mean, std = np.asarray(info.data.mean, np.float64), np.asarray(info.data.std, np.float64)
            self.scale = np.repeat(1.0 / (255.0 * std), h * w).astype("<f4")
            self.offset = np.repeat(mean / std, h * w).astype("<f4")
        self.default_slo_ms = default_slo_ms
        self.max_slo_ms = config.max_slo_ms

    # --- inputs --------------------------------------------------------------------------
    def check_header(self, name: Any, datatype: Any, shape: Any) -> str:
        if name != INPUT_NAME:
            raise ApiError(400, f"unknown input {_short(name)}; this model has one input named {INPUT_NAME!r}")
        if self.tokens and datatype != "INT64":
            raise ApiError(400, f"input datatype {_short(datatype)} not supported; this model takes INT64 "
                                "token ids")
        if not self.tokens and datatype not in ("FP32", "UINT8"):
            raise ApiError(400, f"input datatype {_short(datatype)} not supported; send FP32 (normalised) "
                                "or UINT8 (raw pixels)")
        if not isinstance(shape, (list, tuple)) or not all(type(d) is int for d in shape):
            raise ApiError(400, f"input shape must be a list of integers, got {_short(shape)}")
        if tuple(shape) not in self.shapes:
            if shape and shape[0] != 1 and tuple([1] + list(shape[1:])) in self.shapes:
                raise ApiError(400, f"one image per request (shape {_short(list(shape))}); send "
                                    f"{_short(shape[0])} requests: the server forms the batches")
            raise ApiError(400, f"input shape {_short(list(shape))} not accepted; send {self._shape_text}")
        return datatype

    def decode_raw(self, datatype: str, raw: bytes | memoryview) -> bytes:
        """A binary tensor (REST binary extension, gRPC raw_input_contents) -> a float32 row."""
        if datatype == "INT64":
            if len(raw) != 8 * self.elements:
                raise ApiError(400, f"INT64 input needs {8 * self.elements} bytes, got {len(raw)}")
            return self._from_ids(np.frombuffer(raw, dtype="<i8"))
        if datatype == "FP32":
            if len(raw) != 4 * self.elements:
                raise ApiError(400, f"FP32 input needs {4 * self.elements} bytes, got {len(raw)}")
            arr = np.frombuffer(raw, dtype="<f4")
            if not np.isfinite(arr).all():
                raise ApiError(400, "input contains NaN or infinity")
            return bytes(raw)
        if len(raw) != self.elements:
            raise ApiError(400, f"UINT8 input needs {self.elements} bytes, got {len(raw)}")
        return self._from_pixels(np.frombuffer(raw, dtype=np.uint8))

    def decode_values(self, datatype: str, values: Any) -> bytes:
        """JSON (or gRPC typed-contents) numbers -> a float32 row."""
        if datatype == "INT64":
            try:
                ids = np.asarray(values)
            except (TypeError, ValueError, RecursionError):
                raise ApiError(400, "input data must be a (nested) list of integers") from None
            if ids.size != self.elements or ids.dtype.kind not in "iu":
                raise ApiError(400, f"INT64 input needs {self.elements} integers")
            return self._from_ids(ids.reshape(-1))
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError, RecursionError, OverflowError):
            raise ApiError(400, "input data must be a (nested) list of numbers") from None
        if arr.size != self.elements:
            raise ApiError(400, f"input data has {arr.size} values; the shape needs {self.elements}")
        arr = arr.reshape(-1)
        if not np.isfinite(arr).all():
            raise ApiError(400, "input contains NaN or infinity")
        if datatype == "FP32":
            return arr.astype("<f4").tobytes()
        if (arr < 0).any() or (arr > 255).any() or (arr != np.floor(arr)).any():
            raise ApiError(400, "UINT8 input values must be integers in 0..255")
        return self._from_pixels(arr.astype(np.uint8))

    def _from_ids(self, ids: np.ndarray) -> bytes:
        if (ids < 0).any() or (ids >= self.info.vocab_size).any():
            raise ApiError(400, f"token ids must lie in [0, {self.info.vocab_size})")
        return ids.astype("<f4").tobytes()

    def _from_pixels(self, pixels: np.ndarray) -> bytes:
        return (pixels.astype("<f4") * self.scale - self.offset).astype("<f4").tobytes()

    # --- parameters ----------------------------------------------------------------------
    def options(self, params: Any) -> RequestOptions:
        """slo_ms and min_accuracy from the request's parameters (a dict of plain values)."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ApiError(400, "request parameters must be an object")
        slo = _number(params.get("slo_ms"), "slo_ms", "a number of milliseconds")
        if slo is None:
            slo = self.default_slo_ms
        if not math.isfinite(slo) or slo <= 0 or slo > self.max_slo_ms:
            raise ApiError(400, f"slo_ms={slo!r} out of range; use a deadline in (0, {self.max_slo_ms:g}] ms")
        acc = _number(params.get("min_accuracy"), "min_accuracy", "a number in [0, 1]")
        if acc is None:
            acc = 0.0
        if not 0.0 <= acc <= 1.0:  # also refuses NaN
            raise ApiError(400, f"min_accuracy must be a number in [0, 1], got {acc!r}")
        return RequestOptions(slo, acc, _flag(params.get("min_accuracy_strict"), "min_accuracy_strict"))

    def requested_outputs(self, names: list[Any]) -> tuple[str, ...]:
        for n in names:
            if n not in OUTPUT_NAMES:
                raise ApiError(400, f"unknown output {_short(n)}; this model has {list(OUTPUT_NAMES)}")
        return tuple(names) if names else OUTPUT_NAMES


def _number(value: Any, name: str, what: str) -> float | None:
    """A numeric parameter; numeric strings are accepted because some clients (tritonclient.grpc)
    cannot send floating-point parameters."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ApiError(400, f"{name} must be {what}, got {_short(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{name} must be {what}, got {_short(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float (300+ digits)
        raise ApiError(400, f"{name} must be {what}, got an integer of {len(str(abs(value)))} digits") from None


def _flag(value: Any, name: str) -> bool:
    """A boolean parameter: JSON / protobuf booleans, or the strings "true" / "false"."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ApiError(400, f"{name} must be true or false, got {_short(value)}")


def _short(value: Any) -> str:
    """``repr`` for an error message, cut short (a caller's junk can be any size)."""
    try:
        text = repr(value)
    except ValueError:  # int too large to convert to str
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def result_parameters(result: InferResult) -> dict[str, Any]:
    """What an answer says about how it was served (KServe response parameters)."""
    return {"subnet_id": result.subnet_id, "accuracy": result.accuracy, "batch_size": result.batch_size,
            "queue_ms": round(result.queue_ms, 3), "compute_ms": round(result.compute_ms, 3),
            "outcome": result.outcome.label, "worker": result.worker, "accuracy_floor_met": result.floor_met}


def class_index(logits: bytes) -> int:
    return int(np.frombuffer(logits, dtype="<f4").argmax())


def model_metadata(info: ModelInfo) -> dict[str, Any]:
    c, h, w = info.input_shape
    shape = [-1, w] if info.input_datatype == "INT64" else [-1, c, h, w]
    return {
        "name": info.name, "versions": ["1"], "platform": "superserve_supernet",
        "inputs": [{"name": INPUT_NAME, "datatype": info.input_datatype, "shape": shape}],
        "outputs": [{"name": LOGITS, "datatype": "FP32", "shape": [-1, info.num_classes]},
                    {"name": CLASS, "datatype": "INT64", "shape": [-1, 1]}],
        "parameters": {"subnets": len(info.subnet_ids), "max_server_batch": info.profile.max_batch,
                       **normalisation(info)},
    }


def normalisation(info: ModelInfo) -> dict[str, Any]:
    """How a client turns pixels into the FP32 input: x = (pixel / 255 - input_mean[c]) /
    input_std[c]; and the names of the output classes (the bundle's data.json)."""
    data = info.data
    if data is None:
        return {}
    return {"input_mean": list(data.mean), "input_std": list(data.std), "classes": list(data.classes)}


def instance_group(info: ModelInfo) -> dict[str, Any]:
    """Where the model runs: KIND_GPU with the GPU ids on cuda, KIND_CPU on cpu."""
    if info.gpus:
        return {"name": info.name, "kind": "KIND_GPU", "count": 1, "gpus": list(info.gpus)}
    return {"name": info.name, "kind": "KIND_CPU", "count": 1}


def model_config(info: ModelInfo) -> dict[str, Any]:
    """A Triton-style model configuration (perf_analyzer reads it). max_batch_size is the
    per-request batch (one image); the server batches across requests itself."""
    c, h, w = info.input_shape
    return {
        "name": info.name, "platform": "superserve_supernet", "backend": "superserve",
        "max_batch_size": 1,
        "input": [{"name": INPUT_NAME, "data_type": "TYPE_INT64", "format": "FORMAT_NONE", "dims": [w]}
                  if info.input_datatype == "INT64"
                  else {"name": INPUT_NAME, "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [c, h, w]}],
        "output": [{"name": LOGITS, "data_type": "TYPE_FP32", "dims": [info.num_classes]},
                   {"name": CLASS, "data_type": "TYPE_INT64", "dims": [1]}],
        "dynamic_batching": {"max_queue_delay_microseconds": 0},
        "instance_group": [instance_group(info)],
        "parameters": {"subnets": {"string_value": ",".join(info.subnet_ids)},
                       **{k: {"string_value": json.dumps(v)} for k, v in normalisation(info).items()}},
    }
