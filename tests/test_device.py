"""--device cpu | cuda[:N]: parsing, checking, placement, KServe instance kind, CLI errors.

The CPU tests run everywhere; the CUDA ones are skipped without a GPU (and have not been run
on the machine this was written on, which has none)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from superserve.cli import app
from superserve.device import (Device, DeviceError, Staging, check_device, default_workers, gpu_ids,
                               parse_device, place, worker_device)
from superserve.scheduling.profile import LatencyProfile
from superserve.serving.codec import model_config
from superserve.serving.config import ServeConfig
from superserve.serving.model_info import ModelInfo

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# --- parsing and checking ------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("cpu", Device("cpu")), ("cuda", Device("cuda")), ("cuda:0", Device("cuda", 0)),
    ("cuda:3", Device("cuda", 3)), (" CUDA:1 ", Device("cuda", 1)),
])
def test_parse_device(text, expected):
    dev = parse_device(text)
    assert dev == expected
    assert parse_device(str(dev)) == dev


@pytest.mark.parametrize("text", ["tpu", "gpu", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "", "mps", 3, None])
def test_unknown_devices_are_errors_naming_them(text):
    with pytest.raises(DeviceError) as e:
        parse_device(text)
    assert repr(text) in str(e.value)
    assert isinstance(e.value, ValueError)  # callers that catch ValueError see it


def test_check_device_needs_cuda():
    assert check_device("cpu", count=0) == Device("cpu")
    with pytest.raises(DeviceError, match="'cuda'.*not available"):
        check_device("cuda", count=0)
    with pytest.raises(DeviceError, match="'cuda:2'.*2 CUDA device"):
        check_device("cuda:2", count=2)
    assert check_device("cuda:1", count=2) == Device("cuda", 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_check_device_asks_torch_without_a_gpu():
    with pytest.raises(DeviceError, match="not available"):
        check_device("cuda")


def test_worker_placement():
    cpu, all_gpus, pinned = Device("cpu"), Device("cuda"), Device("cuda", 2)
    assert gpu_ids(cpu, 4) == () and default_workers(cpu, 4) == 1
    assert gpu_ids(all_gpus, 4) == (0, 1, 2, 3) and default_workers(all_gpus, 4) == 4
    assert gpu_ids(pinned, 4) == (2,) and default_workers(pinned, 4) == 1
    assert [worker_device((), i) for i in range(3)] == ["cpu"] * 3
    assert [worker_device((0, 1, 2, 3), i) for i in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3",
                                                                   "cuda:0", "cuda:1"]
    assert [worker_device((2,), i) for i in range(3)] == ["cuda:2"] * 3


def test_cpu_staging_runs_the_model_on_the_slab_views():
    model = torch.nn.Linear(4, 3)
    assert place(model, "cpu") is model
    st = Staging("cpu", 8, (4,), 3)
    assert not st.cuda
    inputs, outputs = torch.randn(8, 4), torch.zeros(8, 3)
    with torch.inference_mode():
        st.run(model, inputs, outputs, 5)
        assert torch.equal(outputs[:5], model(inputs[:5]))
    assert torch.count_nonzero(outputs[5:]) == 0


def test_serve_config_validates_the_device():
    assert ServeConfig().device == "cpu"
    ServeConfig(device="cuda:1").validate()  # well-formed; availability is checked at start
    with pytest.raises(ValueError, match="'tpu'"):
        ServeConfig(device="tpu").validate()
    assert ServeConfig.from_sources(None, {"SUPERSERVE_DEVICE": "cuda:0"}).device == "cuda:0"


def test_model_config_instance_kind():
    info = ModelInfo("m", (1, 28, 28), 10, LatencyProfile.synthetic(), None)
    assert model_config(info)["instance_group"] == [{"name": "m", "kind": "KIND_CPU", "count": 1}]
    gpu = ModelInfo("m", (1, 28, 28), 10, LatencyProfile.synthetic(), None, device="cuda", gpus=(0, 1))
    assert model_config(gpu)["instance_group"] == [{"name": "m", "kind": "KIND_GPU", "count": 1, "gpus": [0, 1]}]


def test_read_model_info_on_cpu_reports_no_gpus():
    from superserve.serving.model_info import read_model_info

    info = read_model_info(ServeConfig())
    assert info.device == "cpu" and info.gpus == ()
    assert model_config(info)["instance_group"][0]["kind"] == "KIND_CPU"


# --- the command line: a clear error, never a traceback -------------------------------------
@pytest.mark.parametrize("command", [["profile"], ["train"], ["serve"]])
def test_cli_rejects_unknown_device(command, tmp_path):
    res = CliRunner().invoke(app, command + ["--device", "tpu:0"])
    assert res.exit_code == 2, res.output
    assert "'tpu:0'" in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
@pytest.mark.parametrize("command", [["profile"], ["train"], ["serve"]])
def test_cli_rejects_cuda_without_a_gpu(command, tmp_path):
    res = CliRunner().invoke(app, command + ["--device", "cuda:0", "--out" if command != ["serve"] else
                                             "--model-name", str(tmp_path / "x") if command != ["serve"] else "m"])
    assert res.exit_code == 2, res.output
    assert "'cuda:0'" in res.output and "not available" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x").exists()  # nothing ran


# --- on a GPU -------------------------------------------------------------------------------
@needs_cuda
def test_subnet_forward_on_cuda_matches_cpu():
    from superserve.embedded import load_bundle

    bundle = load_bundle()
    spec = bundle.model.spec
    x = torch.randn(8, spec.in_channels, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
    ids = [bundle.profile.smallest.id, bundle.profile.largest.id]
    with torch.inference_mode():
        expected = {}
        for sid in ids:
            bundle.model.actuate(sid)
            expected[sid] = bundle.model(x).clone()
        model = place(bundle.model, "cuda:0")
        assert all(b.is_cuda for b in model.buffers())  # the SubnetNorm table moved too
        st = Staging("cuda:0", 8, tuple(x.shape[1:]), expected[ids[0]].shape[1])
        out = torch.zeros_like(expected[ids[0]])
        for sid in ids:
            model.actuate(sid)
            st.run(model, x, out, 8)
            assert not out.is_cuda
            torch.testing.assert_close(out, expected[sid], atol=1e-4, rtol=1e-4)
            st.run(model, x, out, 3)  # a smaller batch through the same staging buffers
            torch.testing.assert_close(out[:3], expected[sid][:3], atol=1e-4, rtol=1e-4)


@needs_cuda
def test_served_request_on_cuda_is_answered():
    import json
    import urllib.request

    from superserve.client import Client
    from superserve.embedded import load_bundle
    from superserve.serving.process import ServerProcess

    image = load_bundle().subset().images[0].numpy()
    with ServerProcess(device="cuda:0", workers=1, grpc_port=None) as srv:
        with Client(srv.http_url) as client:
            pred = client.infer(image)
        assert pred.outcome in ("in_time", "late")
        assert np.all(np.isfinite(pred.logits)) and pred.class_index == int(np.argmax(pred.logits))
        with urllib.request.urlopen(f"{srv.http_url}/v2/models/supernet/config", timeout=10) as r:
            cfg = json.loads(r.read())
    group = cfg.get("config", cfg)["instance_group"][0]
    assert group["kind"] == "KIND_GPU" and group["gpus"] == [0]
