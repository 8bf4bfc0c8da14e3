"""End to end: an OFA-format checkpoint -> `superserve import-ofa` -> `superserve serve` -> a
KServe v2 request answered by a chosen SubNet, whose logits equal `ofa`'s own for that SubNet.

The network is OFA's MobileNetV3 SuperNet (w1.0) with random weights and 10 classes, served
at 32 x 32 so that the server starts in seconds.
"""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from benchmarks._ofa_reference import reference_net, reference_outputs, write_checkpoint
from superserve.bundle_layout import BundleLayout
from superserve.cli import app
from superserve.profiling.ofa_import import load_images
from superserve.scheduling.profile import LatencyProfile
from superserve.serving import ServerProcess
from superserve.supernet import load_supernet

SIZE = 32


def _write_images(folder, count: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_import_serve_and_answer_with_a_chosen_subnet(tmp_path):
    net = reference_net("mbv3-w1.0", n_classes=10)
    write_checkpoint(net, tmp_path / "ofa_mbv3.pth", legacy=True)
    _write_images(tmp_path / "images", 6)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, [
        "import-ofa", str(tmp_path / "ofa_mbv3.pth"), "--arch", "mbv3-w1.0", "--images", str(tmp_path / "images"),
        "--out", str(out), "--num-subnets", "3", "--input-size", str(SIZE), "--max-batch", "2",
        "--repeats", "2", "--calib-images", "6"])
    assert result.exit_code == 0, result.output
    layout = BundleLayout(out)
    assert not layout.missing()
    profile = LatencyProfile.load(layout.profile)
    assert len(profile) == 3 and "orders SubNets only" in profile.meta["accuracy_source"]
    chosen = profile.subnets[0].id  # not the largest: the answer must come from the chosen one
    model = load_supernet(layout.weights, layout.norm)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model.actuate(chosen)
        local = model(x)[0].numpy()
    _, reference = reference_outputs(net, model.config_from_id(chosen).ofa_arguments(), SIZE,
                                     load_images(tmp_path / "images", SIZE, 6), x)

    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, SIZE, SIZE],
                        "data": x.reshape(-1).tolist()}], "parameters": {"slo_ms": 60000}}
    with ServerProcess(bundle=out, policy="clipper+", subnet=chosen, workers=1, warmup_runs=1) as srv:
        req = urllib.request.Request(f"{srv.http_url}/v2/models/supernet/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            status, answer = r.status, json.loads(r.read())
    assert status == 200
    assert answer["parameters"]["subnet_id"] == chosen
    logits = np.array(answer["outputs"][0]["data"], dtype=np.float32)
    np.testing.assert_allclose(logits, local, rtol=0, atol=1e-4)
    # float32 on both sides: within 1e-4 of the output scale (the exact equality is
    # test_ofa_import's, in float64; random weights amplify rounding)
    expected = reference[0].numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4 * float(np.abs(expected).max()))
