"""Protocol pieces without a server: wire compatibility of our .proto with tritonclient's,
worker messages, input decoding, configuration files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from superserve.profiling.latency_profile import LatencyProfile
from superserve.serving.codec import ApiError, InputCodec
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
])
def test_codec_refuses_bad_input(codec, call):
    with pytest.raises(ApiError) as err:
        call(codec)
    assert 400 <= err.value.status < 500 and err.value.grpc in ("INVALID_ARGUMENT", "NOT_FOUND")


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
