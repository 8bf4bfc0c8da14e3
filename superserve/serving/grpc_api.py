"""KServe v2 / Open Inference Protocol over gRPC (grpc.aio), plus Triton's ModelConfig RPC.

The service is registered with a generic handler over our own generated messages
(superserve/serving/protos/inference.proto), so no generated gRPC stub module is needed.
Note: the messages live in protobuf package ``inference``, as tritonclient's do; a process
importing both this module and ``tritonclient.grpc`` gets duplicate-symbol errors, which is
why tests talk to the server in its own process.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import grpc
from google.protobuf.message import DecodeError

from superserve import __version__
from superserve.outcome import GRPC_OUTCOME_METADATA
from superserve.serving.auth import UNAUTHORIZED, BearerAuth
from superserve.serving.codec import (CLASS, LOGITS, ApiError, InputCodec, class_index, model_config,
                                      model_metadata, result_error, result_parameters)
from superserve.serving.model_info import ModelInfo
from superserve.serving.protos import inference_pb2 as pb
from superserve.serving.rest import EXTENSIONS, ModelRouter, RequestMetrics, ServedModel, unknown_model
from superserve.serving.router import Origin

SERVICE = "inference.GRPCInferenceService"
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})  # health: no token needed


def _param_value(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _set_param(p: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


class _Malformed:
    """What a request that is not valid protobuf decodes to: the handler answers
    INVALID_ARGUMENT instead of gRPC's own UNKNOWN ("Unexpected DecodeError")."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(req_type):
    def parse(data: bytes):
        try:
            return req_type.FromString(data)
        except DecodeError as exc:
            return _Malformed(str(exc))
    return parse


class GrpcApi:
    def __init__(self, info: ModelInfo, router: ModelRouter, codec: InputCodec, metrics: RequestMetrics,
                 auth: BearerAuth | None = None, live: Callable[[], bool] = lambda: True,
                 others: Sequence[ServedModel] = ()) -> None:
        """``live``: False once no worker can come back (the supervisor's ``can_recover``).
        ``others``: the further models of a server of several SuperNets (as for the REST API)."""
        self.info, self.router, self.codec, self.metrics = info, router, codec, metrics
        self.auth = auth or BearerAuth(None)
        self.is_live = live
        self.models: dict[str, ServedModel] = {}
        for m in others:  # own copies: the REST front end keeps JSON, this one protobuf messages
            metadata, config = self._messages(m.info)
            self.models[m.info.name] = replace(m, metadata=metadata, config=config)
        self.set_model(info)
        self._server_metadata = pb.ServerMetadataResponse(name="superserve", version=__version__,
                                                          extensions=EXTENSIONS)

    def set_model(self, info: ModelInfo) -> None:
        """Serve the metadata and config of ``info`` (at start, and after a hot reload)."""
        self.info = info
        self._metadata, self._config = self._messages(info)
        first = ServedModel(info, self.router, self.codec, self.metrics, self._metadata, self._config)
        self.models = {info.name: first, **{n: m for n, m in self.models.items() if m.router is not self.router}}

    @staticmethod
    def _messages(info: ModelInfo) -> tuple[pb.ModelMetadataResponse, pb.ModelConfigResponse]:
        """The ModelMetadata and ModelConfig answers of ``info``."""
        meta = model_metadata(info)
        metadata = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]])
        cfg = model_config(info)
        config = pb.ModelConfigResponse(config=pb.ModelConfig(
            name=cfg["name"], platform=cfg["platform"], backend=cfg["backend"],
            max_batch_size=cfg["max_batch_size"],
            input=[pb.ModelInput(name=t["name"], data_type=t["data_type"], format=t["format"], dims=t["dims"])
                   for t in cfg["input"]],
            output=[pb.ModelOutput(name=t["name"], data_type=t["data_type"], dims=t["dims"]) for t in cfg["output"]],
            instance_group=[pb.ModelInstanceGroup(name=g["name"], kind=g["kind"], count=g["count"])
                            for g in cfg["instance_group"]],
            dynamic_batching=pb.ModelDynamicBatching(max_queue_delay_microseconds=0),
            parameters={k: pb.ModelParameter(string_value=v["string_value"]) for k, v in cfg["parameters"].items()}))
        return metadata, config

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        }
        handlers = {}
        for name, (fn, req_type, resp_type) in methods.items():
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                self._checked(fn, needs_token=self.auth.enabled and name not in OPEN_METHODS),
                request_deserializer=_lenient(req_type), response_serializer=resp_type.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _checked(self, fn, needs_token: bool):
        """Token first (no details about the request to a caller without one), then the
        request must have parsed."""
        async def checked(request, context):
            if needs_token and not self.auth.allows_metadata(context.invocation_metadata()):
                self.metrics.refused(401)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED)
            if isinstance(request, _Malformed):
                self.metrics.refused(400)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"request is not a valid protobuf message: {request.error[:200]}")
            return await fn(request, context)
        return checked

    # --- health and metadata -------------------------------------------------------------
    async def server_live(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.is_live())

    async def server_ready(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=all(m.router.ready for m in self.models.values()))

    def _check_model(self, name: str, version: str) -> ServedModel:
        """The served model ``name`` (ApiError 404 for another name or version)."""
        model = self.models.get(name)
        if model is None:
            raise unknown_model(name, list(self.models))
        if version not in ("", "1"):
            raise ApiError(404, f"model {name!r} has no version {version!r}; it has version '1'")
        return model

    async def _abort(self, context, exc: ApiError):
        outcome = ((GRPC_OUTCOME_METADATA, exc.outcome.label),) if exc.outcome is not None else ()
        await context.abort(getattr(grpc.StatusCode, exc.grpc), exc.message, outcome)

    async def model_ready(self, request, context) -> pb.ModelReadyResponse:
        try:
            model = self._check_model(request.name, request.version)
        except ApiError as exc:
            await self._abort(context, exc)
        return pb.ModelReadyResponse(ready=model.router.ready)

    async def server_metadata(self, request, context) -> pb.ServerMetadataResponse:
        return self._server_metadata

    async def model_metadata(self, request, context) -> pb.ModelMetadataResponse:
        try:
            model = self._check_model(request.name, request.version)
        except ApiError as exc:
            await self._abort(context, exc)
        return model.metadata

    async def model_config(self, request, context) -> pb.ModelConfigResponse:
        try:
            model = self._check_model(request.name, request.version)
        except ApiError as exc:
            await self._abort(context, exc)
        return model.config

    # --- inference -----------------------------------------------------------------------
    async def model_infer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        codec, metrics, info = self.codec, self.metrics, self.info
        try:
            model = self._check_model(request.model_name, request.model_version)
            codec, metrics, info = model.codec, model.metrics, model.info
            if len(request.inputs) != 1:
                raise ApiError(400, f"send exactly one input tensor named 'input', got {len(request.inputs)}")
            t = request.inputs[0]
            datatype = codec.check_header(t.name, t.datatype, list(t.shape))
            if request.raw_input_contents:
                if len(request.raw_input_contents) != 1:
                    raise ApiError(400, "raw_input_contents must hold exactly one entry (one input)")
                row = codec.decode_raw(datatype, request.raw_input_contents[0])
            elif t.HasField("contents"):
                values = {"FP32": t.contents.fp32_contents, "INT64": t.contents.int64_contents}.get(
                    datatype, t.contents.uint_contents)
                row = codec.decode_values(datatype, list(values))
            else:
                raise ApiError(400, "input has neither raw_input_contents nor contents")
            options = codec.options({k: _param_value(v) for k, v in request.parameters.items()})
            names = codec.requested_outputs([o.name for o in request.outputs])
            result = await model.router.infer(row, options.slo_ms, options.min_accuracy, strict=options.strict,
                                              origin=Origin(request.id, datatype, list(t.shape)))
            if not result.ok:
                raise result_error(result)
        except ApiError as exc:
            if exc.outcome is None:  # outcomes are counted by the router
                metrics.refused(exc.status)
            await self._abort(context, exc)
            raise  # not reached: abort raises
        resp = pb.ModelInferResponse(model_name=info.name, model_version="1", id=request.id)
        logits = result.logits or b""
        for k, v in result_parameters(result).items():
            _set_param(resp.parameters[k], v)
        for name in names:
            out = resp.outputs.add()
            out.name = name
            if name == LOGITS:
                out.datatype, out.shape[:] = "FP32", [1, info.num_classes]
                resp.raw_output_contents.append(logits)
            elif name == CLASS:
                out.datatype, out.shape[:] = "INT64", [1, 1]
                resp.raw_output_contents.append(class_index(logits).to_bytes(8, "little", signed=True))
        return resp
