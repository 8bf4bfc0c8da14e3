"""What one inference call returns, and the protocol work around it shared by the REST and
gRPC transports: shaping the input, the request parameters, reading the answer."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from superserve.client.errors import ServerError

LOGITS = "logits"
CLASS = "class_index"
_DATATYPES = {"FP32": "<f4", "INT64": "<i8", "FP64": "<f8", "INT32": "<i4", "UINT8": "u1"}


@dataclass(frozen=True, eq=False)
class Prediction:
    """One answer: the outputs, and what served it (the server's response parameters)."""

    logits: np.ndarray  # float32, one value per class
    class_index: int  # argmax of the logits, as the server computed it
    subnet_id: str  # the SubNet that ran the request
    accuracy: float  # that SubNet's profiled accuracy
    batch_size: int  # how many requests its batch held
    queue_ms: float  # arrival at the router to dispatch to a worker
    compute_ms: float  # the worker's forward pass of the whole batch
    worker: int  # which worker ran it
    outcome: str  # "in_time" or "late" (answered after its deadline)
    accuracy_floor_met: bool  # the SubNet's accuracy >= the request's min_accuracy
    latency_ms: float  # send to answer, measured by this client


def as_image(image: Any) -> np.ndarray:
    """One image as a KServe input tensor, channels first: float32 (normalised) or uint8 (raw
    pixels, the server normalises them with the bundle's per-channel mean and std), with a leading batch dimension of 1 added when it has none
    (a first dimension other than 1). Anything ``np.asarray`` takes, CPU torch tensors
    included. Float64 is sent as float32; other types raise ValueError."""
    arr = np.asarray(image)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.float32, np.uint8):
        raise ValueError(f"images must be float32 (normalised) or uint8 (raw pixels), not {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("an image must have at least one dimension")
    if arr.shape[0] != 1:
        arr = arr[None]
    return np.ascontiguousarray(arr)


def request_parameters(slo_ms: float | None, min_accuracy: float | None, strict: bool) -> dict[str, Any]:
    """The request's KServe parameters (the server's defaults apply to what is left out)."""
    params: dict[str, Any] = {}
    if slo_ms is not None:
        params["slo_ms"] = float(slo_ms)
    if min_accuracy is not None:
        params["min_accuracy"] = float(min_accuracy)
    if strict:
        params["min_accuracy_strict"] = True
    return params


def prediction(params: dict[str, Any], outputs: dict[str, np.ndarray], latency_ms: float) -> Prediction:
    """A Prediction from the answer's parameters and decoded outputs; ServerError when the
    answer lacks what every superserve answer carries."""
    try:
        logits = outputs[LOGITS].astype(np.float32).reshape(-1)
        cls = outputs.get(CLASS)
        return Prediction(
            logits=logits, class_index=int(cls.reshape(-1)[0]) if cls is not None else int(logits.argmax()),
            subnet_id=str(params["subnet_id"]), accuracy=float(params["accuracy"]),
            batch_size=int(params["batch_size"]), queue_ms=float(params["queue_ms"]),
            compute_ms=float(params["compute_ms"]), worker=int(params["worker"]), outcome=str(params["outcome"]),
            accuracy_floor_met=bool(params.get("accuracy_floor_met", True)), latency_ms=latency_ms)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ServerError(f"the server's answer lacks a superserve field or output ({exc!r}): is this a "
                          "superserve server?") from None


def rest_outputs(body: bytes, header_length: int | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(parameters, outputs by name) of a REST answer, JSON or with binary outputs (the JSON
    header's first ``header_length`` bytes, then each binary output in order)."""
    try:
        header = json.loads(body[:header_length] if header_length is not None else body)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
        offset = header_length or 0
        outputs: dict[str, np.ndarray] = {}
        for out in header.get("outputs") or []:
            dtype = _DATATYPES[out["datatype"]]
            if "data" in out:
                outputs[out["name"]] = np.asarray(out["data"], dtype=dtype)
            else:
                size = int(out["parameters"]["binary_data_size"])
                if offset + size > len(body):
                    raise ValueError(f"output {out['name']!r} runs past the end of the body")
                outputs[out["name"]] = np.frombuffer(body, dtype=dtype, count=size // np.dtype(dtype).itemsize,
                                                     offset=offset)
                offset += size
        return header.get("parameters") or {}, outputs
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ServerError(f"unreadable answer from the server: {exc!r}") from None


def error_text(body: bytes) -> tuple[str, str | None]:
    """(message, outcome label) of a REST error answer ``{"error": ..., "outcome": ...}``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:300].decode("utf-8", "replace") or "(no body)", None
    if not isinstance(data, dict):
        return str(data)[:300], None
    outcome = data.get("outcome")
    return str(data.get("error", data)), outcome if isinstance(outcome, str) else None
