"""End to end for the transformer families: the shipped ViT bundle (`--bundle vit`) answers a
request through superserve.Client with the chosen SubNet's logits; a random Hugging Face BERT
-> `superserve import-bert` -> `superserve serve` answers an INT64 token-id request with the
logits of the reference model pruned to the chosen SubNet."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from superserve.bundle_layout import EMBEDDED_VIT_DIR, BundleLayout
from superserve.cli import app
from superserve.scheduling.profile import LatencyProfile
from superserve.serving import ServerProcess


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.skipif(not BundleLayout(EMBEDDED_VIT_DIR).weights.exists(), reason="the ViT bundle is not built")
def test_vit_bundle_serves_by_name_through_the_client():
    from superserve import Client
    from superserve.embedded import load_bundle

    bundle = load_bundle("vit")
    assert bundle.root == EMBEDDED_VIT_DIR
    chosen = bundle.profile.subnets[len(bundle.profile.subnets) // 2].id  # neither end of the front
    subset = bundle.subset()
    images = subset.images[:4]
    with torch.inference_mode():
        bundle.model.actuate(chosen)
        local = bundle.model(subset.normalized(0, 4)).numpy()
    with ServerProcess(bundle="vit", policy="clipper+", subnet=chosen, workers=1, warmup_runs=1) as srv:
        client = Client(srv.http_url, timeout_s=60)
        for i in range(4):
            pred = client.infer(images[i].numpy()[None], slo_ms=60000)  # uint8 pixels, normalised by the server
            assert pred.subnet_id == chosen
            np.testing.assert_allclose(np.asarray(pred.logits), local[i], rtol=0, atol=1e-4)
            assert pred.class_index == int(local[i].argmax())


def test_imported_bert_serves_int64_token_ids(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_bert_import import reference_subnet  # tests/ is on sys.path (pytest prepend import mode)

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=3)
    hf = transformers.BertForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "bert")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["import-bert", str(tmp_path / "bert"), "--out", str(out), "--seq-len", "8",
                                      "--max-batch", "2", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    profile = LatencyProfile.load(BundleLayout(out).profile)
    assert len(profile) == 12 and "orders SubNets only" in profile.meta["accuracy_source"]
    chosen = next(s.id for s in profile.subnets if s.id.startswith("d050"))  # half the layers, kept spread
    from superserve.supernet.vit import TransformerChoice

    ids = torch.tensor([[5, 17, 42, 3, 99, 0, 0, 0]])  # padded with pad_token_id 0
    with torch.no_grad():
        expected = reference_subnet(hf, TransformerChoice.from_id(chosen))(
            input_ids=ids, attention_mask=(ids != 0).long()).logits[0].numpy()
    body = {"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 8], "data": ids[0].tolist()}],
            "parameters": {"slo_ms": 60000}}
    with ServerProcess(bundle=out, policy="clipper+", subnet=chosen, workers=1, warmup_runs=1) as srv:
        url = f"{srv.http_url}/v2/models/supernet"
        with urllib.request.urlopen(url, timeout=30) as r:
            meta = json.loads(r.read())
        assert meta["inputs"][0]["datatype"] == "INT64" and meta["inputs"][0]["shape"] == [-1, 8]
        status, answer = _post(f"{url}/infer", body)
        assert status == 200, answer
        assert answer["parameters"]["subnet_id"] == chosen
        np.testing.assert_allclose(np.array(answer["outputs"][0]["data"], np.float32), expected, rtol=0, atol=1e-4)
        bad = json.loads(json.dumps(body))
        bad["inputs"][0]["data"][0] = 100  # outside the vocabulary
        status, err = _post(f"{url}/infer", bad)
        assert status == 400 and "token ids" in err["error"]
        bad["inputs"][0]["datatype"] = "FP32"
        status, err = _post(f"{url}/infer", bad)
        assert status == 400 and "INT64" in err["error"]
