"""Protocol pieces without a server: wire compatibility of our .proto with tritonclient's,
worker messages, input decoding, configuration files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from superserve.scheduling.profile import LatencyProfile
from superserve.outcome import SERVER_OUTCOMES, Outcome
from superserve.serving.codec import ApiError, InputCodec, result_error, result_parameters
from superserve.serving.config import ServeConfig
from superserve.serving.messages import BatchDone, BatchFailed, RunBatch, Stop, WorkerReady, decode, encode
from superserve.serving.model_info import ModelInfo

# Both modules define protobuf package `inference`: compare them in separate interpreters.
_DUMP = r"""
import json, sys
mod = sys.argv[1]
if mod == "ours":
    from superserve.serving.protos import inference_pb2 as s
    c = s
else:
    from tritonclient.grpc import service_pb2 as s, model_config_pb2 as c
def fields(d, prefix=""):
    out = {}
    for f in d.fields:
        t = f.message_type.full_name if f.message_type else (f.enum_type.full_name if f.enum_type else f.type)
        out[prefix + d.name + "." + f.name] = [f.number, str(t), f.is_repeated]
    for n in d.nested_types:
        if not n.GetOptions().map_entry:
            out.update(fields(n, prefix + d.name + "."))
    return out
names = ["ServerLiveResponse", "ServerReadyResponse", "ModelReadyRequest", "ModelReadyResponse",
         "ServerMetadataResponse", "ModelMetadataRequest", "ModelMetadataResponse", "InferParameter",
         "InferTensorContents", "ModelInferRequest", "ModelInferResponse", "ModelConfigRequest",
         "ModelConfigResponse"]
out = {}
for n in names:
    out.update(fields(s.DESCRIPTOR.message_types_by_name[n]))
for n in ["ModelConfig", "ModelInput", "ModelOutput", "ModelDynamicBatching", "ModelInstanceGroup"]:
    out.update(fields(c.DESCRIPTOR.message_types_by_name[n]))
svc = s.DESCRIPTOR.services_by_name["GRPCInferenceService"]
out["service"] = svc.full_name
out["methods"] = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in svc.methods}
print(json.dumps(out))
"""


def _dump(which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _DUMP, which], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_proto_matches_tritonclient_wire_format():
    ours, theirs = _dump("ours"), _dump("triton")
    assert ours.pop("service") == theirs.pop("service") == "inference.GRPCInferenceService"
    for method, types in ours.pop("methods").items():
        assert theirs["methods"][method] == types
    theirs.pop("methods")
    for key, value in ours.items():  # ours is a subset: every field we have, they have, same number/type
        assert theirs.get(key) == value, key


def test_worker_messages_round_trip():
    for msg in (RunBatch(7, 3, 16), Stop(), WorkerReady(1234, 1.5), BatchDone(9, 2.5),
                BatchFailed(4, "RuntimeError: ü")):
        assert decode(encode(msg)) == msg  # (the floats chosen are exact in float32)
    assert len(encode(RunBatch(1, 2, 3))) == 9  # a batch crosses the process boundary in 9 bytes
    with pytest.raises(ValueError):
        decode(b"?")


@pytest.fixture
def codec():
    info = ModelInfo("m", (1, 28, 28), 10, LatencyProfile.synthetic(), None)
    return InputCodec(info, ServeConfig(), default_slo_ms=50.0)


def test_codec_accepts_the_documented_forms(codec):
    x = np.random.default_rng(0).normal(size=784).astype("<f4")
    for shape in ([1, 1, 28, 28], [1, 28, 28], [1, 784]):
        assert codec.check_header("input", "FP32", shape) == "FP32"
    assert codec.decode_raw("FP32", x.tobytes()) == x.tobytes()
    assert codec.decode_values("FP32", x.reshape(28, 28).tolist()) == x.tobytes()
    pixels = np.arange(784) % 256
    expected = ((pixels / 255.0 - 0.2860) / 0.3530).astype("<f4")
    np.testing.assert_allclose(np.frombuffer(codec.decode_raw("UINT8", pixels.astype(np.uint8).tobytes()), "<f4"),
                               expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.frombuffer(codec.decode_values("UINT8", pixels.tolist()), "<f4"), expected,
                               rtol=1e-6, atol=1e-6)
    assert codec.options({}).slo_ms == 50.0
    assert codec.options({"slo_ms": "20", "min_accuracy": 0.5}).slo_ms == 20.0
    assert not codec.options({"min_accuracy": 0.5}).strict
    assert codec.options({"min_accuracy": 0.5, "min_accuracy_strict": True}).strict
    assert codec.options({"min_accuracy_strict": "true"}).strict  # clients that send strings only


@pytest.mark.parametrize("call", [
    lambda c: c.check_header("input", "FP32", [1, 3, 28, 28]),
    lambda c: c.check_header("input", "BYTES", [1, 784]),
    lambda c: c.check_header(None, "FP32", [1, 784]),
    lambda c: c.check_header("input", "FP32", "1,784"),
    lambda c: c.check_header("input", "FP32", [1.0, 784]),
    lambda c: c.decode_raw("FP32", b"\0" * 100),
    lambda c: c.decode_raw("FP32", np.full(784, np.inf, "<f4").tobytes()),
    lambda c: c.decode_values("FP32", [[1, 2], [3]]),
    lambda c: c.decode_values("FP32", ["a"] * 784),
    lambda c: c.decode_values("UINT8", [-1] * 784),
    lambda c: c.decode_values("UINT8", [0.5] * 784),
    lambda c: c.options({"slo_ms": float("nan")}),
    lambda c: c.options({"slo_ms": 0}),
    lambda c: c.options({"slo_ms": True}),
    lambda c: c.options({"min_accuracy": float("nan")}),
    lambda c: c.options([1]),
    lambda c: c.requested_outputs(["softmax"]),
    # Integers past any float (310+ digits) were an OverflowError: HTTP 500.
    lambda c: c.options({"slo_ms": 10 ** 310}),
    lambda c: c.options({"slo_ms": -(10 ** 4000)}),
    lambda c: c.options({"min_accuracy": 10 ** 309}),
    lambda c: c.options({"min_accuracy": "9" * 400}),
    lambda c: c.options({"min_accuracy_strict": "maybe"}),
    lambda c: c.options({"min_accuracy_strict": 1}),
    lambda c: c.decode_values("FP32", [10 ** 310] * 784),
    lambda c: c.check_header("input", "FP32", [1, 10 ** 400]),
])
def test_codec_refuses_bad_input(codec, call):
    with pytest.raises(ApiError) as err:
        call(codec)
    assert 400 <= err.value.status < 500 and err.value.grpc in ("INVALID_ARGUMENT", "NOT_FOUND")


# The wire status of every outcome the router answers that is not an answer (as before the
# shared superserve.outcome.Outcome): HTTP status, gRPC code, the label in the body.
@pytest.mark.parametrize("outcome, status, grpc_code, label", [
    (Outcome.SHED, 504, "DEADLINE_EXCEEDED", "shed"), (Outcome.REJECTED, 429, "RESOURCE_EXHAUSTED", "rejected"),
    (Outcome.UNAVAILABLE, 503, "UNAVAILABLE", "unavailable"), (Outcome.ERROR, 500, "INTERNAL", "error"),
    (Outcome.FLOOR_UNMET, 422, "FAILED_PRECONDITION", "floor_unmet")])
def test_outcomes_map_to_one_status(outcome, status, grpc_code, label):
    from superserve.serving.router import InferResult
    err = result_error(InferResult(outcome, message="why"))
    assert (err.status, err.grpc, err.outcome.label, err.message) == (status, grpc_code, label, "why")
    assert outcome in SERVER_OUTCOMES and not outcome.answered
    done = result_parameters(InferResult(Outcome.LATE))
    assert done["outcome"] == "late" and json.loads(json.dumps(done))["outcome"] == "late"


def test_config_files(tmp_path):
    (tmp_path / "serve.toml").write_text('bundle = "mybundle"\npolicy = "maxacc"\nworkers = 3\n'
                                         '[policy_params]\nnum_buckets = 8\n')
    cfg = ServeConfig.from_file(tmp_path / "serve.toml", workers=2)
    assert cfg.bundle == str(tmp_path / "mybundle") and cfg.policy == "maxacc" and cfg.workers == 2
    assert cfg.policy_params == {"num_buckets": 8}
    (tmp_path / "serve.json").write_text(json.dumps({"policy": "clipper+", "workerz": 1}))
    with pytest.raises(ValueError, match="unknown settings"):
        ServeConfig.from_file(tmp_path / "serve.json")
    with pytest.raises(ValueError, match="--subnet"):
        ServeConfig(policy="clipper+").validate()
    with pytest.raises(ValueError, match="late"):
        ServeConfig(late="maybe").validate()


@pytest.mark.parametrize("setting, value", [
    ("http_port", 70000), ("http_port", -1), ("grpc_port", 65536), ("http_port", "8000"),
    ("max_slo_ms", 0), ("max_slo_ms", float("inf")), ("max_slo_ms", float("nan")),
    ("hang_timeout_s", 0), ("hang_timeout_s", -1.0), ("hang_timeout_s", float("nan")),
    ("overhead_ms", -0.1), ("overhead_ms", float("inf")), ("overhead_ms", 10 ** 400),
    ("quantile", "p95"), ("quantile", None), ("workers", True), ("queue_capacity", 0),
    ("request_max_deaths", 0), ("restart_cooldown_s", 0), ("restart_cooldown_s", float("inf")),
    ("policy_params", ["num_buckets", 4]), ("tls_cert", "/nonexistent.pem"),
])
def test_config_validation_names_the_bad_setting(setting, value):
    """Before, ports, max_slo_ms, hang_timeout_s, overhead_ms and quantile were not checked
    (a bad one failed later, or silently)."""
    with pytest.raises(ValueError, match=setting.split("_")[0]):
        ServeConfig(**{setting: value}).validate()


def test_defaults_validate_and_tls_needs_both_files(tmp_path):
    ServeConfig().validate()
    ServeConfig(grpc_port=None, http_port=0, restart_cooldown_s=None).validate()
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        ServeConfig(tls_cert=str(tmp_path / "c.pem")).validate()


def test_an_unknown_policy_parameter_is_a_clear_error_not_a_traceback():
    """Before: TypeError from the policy's constructor, a traceback at start (the CLI's
    error path only reports ValueError, OSError, ...)."""
    from superserve.serving.server import build_planner, build_policy

    info = ModelInfo("m", (1, 28, 28), 10, LatencyProfile.synthetic(), None)
    with pytest.raises(ValueError, match=r"\['num_bucketz'\] not parameters of policy 'slackfit-paper'.*num_buckets"):
        build_policy(ServeConfig(policy="slackfit-paper", policy_params={"num_bucketz": 8}), info)
    with pytest.raises(ValueError, match="partial"):
        build_policy(ServeConfig(policy="slackfit-paper", policy_params={"partial": "nope"}), info)
    with pytest.raises(ValueError, match="overhead_ms"):
        build_planner(ServeConfig(policy_params={"overhead_ms": "fast"}), info)
    assert build_policy(ServeConfig(policy="slackfit-paper", policy_params={"num_buckets": 8}), info)


def test_a_non_loopback_bind_without_a_token_is_warned_about_loudly():
    from superserve.serving.server import insecure_bind_warning

    assert insecure_bind_warning(ServeConfig()) is None
    assert insecure_bind_warning(ServeConfig(host="localhost")) is None
    assert insecure_bind_warning(ServeConfig(host="0.0.0.0", auth_token="t0ken")) is None
    text = insecure_bind_warning(ServeConfig(host="0.0.0.0"))
    assert text.startswith("WARNING") and "WITHOUT an auth token" in text and "SUPERSERVE_AUTH_TOKEN" in text
