"""LitServe peer of benchmarks/peers.py: one LitAPI serving one extracted SubNet (or the no-op
model) with LitServe's own batching, one inference worker, one torch thread.

    python -m benchmarks._peers_litserve --model smallest --port 8123 [--fast-queue]

POST /predict {"input": [784 floats]} -> {"class": int, "logits": [10 floats]}; GET /health.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import litserve as ls  # noqa: E402

from benchmarks._peers_models import MODELS, Predictor  # noqa: E402


class SubNetAPI(ls.LitAPI):
    def __init__(self, model: str, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model_name = model

    def setup(self, device) -> None:
        self.predict_fn = Predictor(self.model_name)  # torch.set_num_threads(1) inside

    def decode_request(self, request):
        return request["input"]

    def batch(self, inputs):
        return list(inputs)

    def predict(self, x):
        return self.predict_fn(x)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"class": max(range(len(output)), key=output.__getitem__), "logits": output}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=MODELS, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ queue (fast_queue=True)")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--batch-timeout", type=float, default=0.002, help="seconds")
    a = ap.parse_args()
    api = SubNetAPI(a.model, a.max_batch_size, a.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=30,
                          fast_queue=a.fast_queue)
    server.run(host="127.0.0.1", port=a.port, num_api_servers=1, generate_client_file=False,
               log_level="warning")


if __name__ == "__main__":
    main()
