"""Safe defaults: loopback bind, bearer-token auth on every endpoint but health (REST and
gRPC), constant-time compare, no pickle on the load path."""
from __future__ import annotations

import ast
import ipaddress
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

import superserve
from superserve.embedded import EMBEDDED_DIR
from superserve.serving import ServeConfig, ServerProcess
from superserve.serving.auth import BearerAuth

BUNDLE = os.environ.get("SUPERSERVE_BUNDLE", str(EMBEDDED_DIR))
TOKEN = "s3cret-token_for-tests"
PACKAGE = Path(superserve.__file__).parent


@pytest.fixture(scope="module")
def server():
    with ServerProcess(bundle=BUNDLE, workers=1, warmup_runs=1, auth_token=TOKEN) as srv:
        yield srv
    assert srv.proc.returncode == 0, srv.log_tail()


def http(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> int:
    req = urllib.request.Request(srv.http_url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


BODY = json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 784], "data": [7] * 784}]}).encode()
PROTECTED = [("GET", "/v2"), ("GET", "/v2/models/supernet"), ("GET", "/v2/models/supernet/ready"),
             ("GET", "/v2/models/supernet/config"), ("GET", "/v2/models/supernet/versions/1"),
             ("GET", "/metrics"), ("POST", "/v2/models/supernet/infer"), ("GET", "/nope"),
             ("POST", "/v2/models/other/infer")]


def test_default_config_is_loopback_without_auth():
    cfg = ServeConfig()
    assert cfg.host == "127.0.0.1" and cfg.auth_token is None
    assert cfg.max_request_bytes == 1 << 20
    assert TOKEN not in repr(ServeConfig(auth_token=TOKEN))  # the token never shows in logs


def test_server_listens_on_loopback_only(server):
    ports = {server.info["http_port"], server.info["grpc_port"]}
    listening = [c for c in psutil.Process(server.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
    assert len(listening) == 2
    for c in listening:  # gRPC binds an IPv6 socket to the v4-mapped loopback address
        ip = ipaddress.ip_address(c.laddr.ip)
        assert (getattr(ip, "ipv4_mapped", None) or ip).is_loopback, c


def test_token_never_written_to_disk(server):
    assert TOKEN not in (server.log_path.parent / "config.json").read_text()
    assert TOKEN not in " ".join(psutil.Process(server.pid).cmdline())


@pytest.mark.parametrize("method,path", PROTECTED)
def test_rest_needs_the_token(server, method, path):
    body = BODY if method == "POST" else None
    assert http(server, method, path, body) == 401
    assert http(server, method, path, body, {"Authorization": "Bearer wrong"}) == 401
    assert http(server, method, path, body, {"Authorization": TOKEN}) == 401  # no scheme
    assert http(server, method, path, body, {"Authorization": f"Bearer {TOKEN}x"}) == 401
    good = http(server, method, path, body, {"Authorization": f"bearer {TOKEN}"})  # scheme is case-insensitive
    assert good != 401


def test_health_is_open_and_good_token_serves(server):
    assert http(server, "GET", "/v2/health/live") == 200
    assert http(server, "GET", "/v2/health/ready") == 200
    assert http(server, "POST", "/v2/models/supernet/infer", BODY, server.auth_headers) == 200
    req = urllib.request.Request(server.http_url + "/metrics", headers=server.auth_headers)
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    assert 'superserve_invalid_requests_total{status="401"}' in text


def test_grpc_needs_the_token(server):
    import grpc
    from tritonclient.grpc import service_pb2 as pb  # not our module: see grpc_api's docstring

    with grpc.insecure_channel(server.grpc_address) as ch:
        def call(method, req, resp, metadata=None):
            fn = ch.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                request_serializer=req.SerializeToString, response_deserializer=resp.FromString)
            return fn(req, metadata=metadata, timeout=10)
        live = call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
        assert live.live and call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
        infer = pb.ModelInferRequest(model_name="supernet")
        t = infer.inputs.add(name="input", datatype="UINT8", shape=[1, 784])
        infer.raw_input_contents.append(bytes(784))
        del t
        for method, req, resp in [("ModelInfer", infer, pb.ModelInferResponse),
                                  ("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse),
                                  ("ModelMetadata", pb.ModelMetadataRequest(name="supernet"), pb.ModelMetadataResponse),
                                  ("ModelReady", pb.ModelReadyRequest(name="supernet"), pb.ModelReadyResponse)]:
            for md in (None, (("authorization", "Bearer nope"),)):
                with pytest.raises(grpc.RpcError) as err:
                    call(method, req, resp, md)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
            call(method, req, resp, (("authorization", f"Bearer {TOKEN}"),))


def test_bearer_auth_unit():
    auth = BearerAuth(TOKEN)
    assert auth.allows(f"Bearer {TOKEN}") and auth.allows(f"BEARER  {TOKEN} ")
    for bad in (None, "", "Bearer", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", "Bearer \udcff\u00e9", "Bearer ü"):
        assert not auth.allows(bad)
    assert BearerAuth(None).allows(None)
    assert auth.allows_metadata([("x", "y"), ("authorization", f"Bearer {TOKEN}".encode())])
    assert not auth.allows_metadata([]) and not auth.allows_metadata(None)
    with pytest.raises(ValueError, match="visible ASCII"):
        ServeConfig(auth_token="has space").validate()


# --- no pickle on the load path ----------------------------------------------------------------
def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            base = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, base, name


def test_no_pickle_anywhere_in_the_package():
    """No module imports pickle (or its relatives); every torch.load passes weights_only=True;
    no numpy load allows pickles; multiprocessing messages go through send_bytes only."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "protos" in path.parts:
            continue  # generated protobuf code
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for m in mods:
                    if m.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"):
                        offenders.append(f"{rel}:{node.lineno} imports {m}")
        for node, base, name in _calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            if base == "torch" and name == "load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    offenders.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
            if base in ("np", "numpy") and name == "load":
                ap = kw.get("allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    offenders.append(f"{rel}:{node.lineno} np.load(allow_pickle=...)")
        # Connection.send / recv pickle; the serving path must use send_bytes / recv_bytes.
        if "serving" in path.parts:
            for node, base, name in _calls(tree):
                if name in ("send", "recv") and isinstance(node.func, ast.Attribute) and \
                        "conn" in ast.unparse(node.func.value):
                    offenders.append(f"{rel}:{node.lineno} pickling Connection.{name}")
    assert offenders == [], "\n".join(offenders)


def test_router_process_never_imports_torch_or_pickle_for_messages():
    import subprocess
    import sys
    code = ("import sys; import superserve.serving.server, superserve.serving.grpc_api; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# --- TLS (issue 12) ----------------------------------------------------------------------------------
@pytest.mark.parametrize("frontends", [0, 1], ids=["single-process", "front-end"])
def test_tls_for_rest_and_grpc(tls_pair, frontends):
    import ssl

    import grpc
    from tritonclient.grpc import service_pb2 as pb  # not our module: see grpc_api's docstring

    cert, key = tls_pair
    with ServerProcess(bundle=BUNDLE, workers=1, warmup_runs=1, auth_token=TOKEN, tls_cert=cert, tls_key=key,
                       frontends=frontends) as srv:
        assert srv.http_url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        req = urllib.request.Request(srv.http_url + "/v2/models/supernet/infer", data=BODY, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
            assert r.status == 200 and json.loads(r.read())["outputs"]
        no_token = urllib.request.Request(srv.http_url + "/v2/models/supernet/infer", data=BODY, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(no_token, timeout=30, context=ctx)
        assert refused.value.code == 401
        # Plain HTTP on the TLS port is refused (no clear text, token included, ever answered).
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(srv.http_url.replace("https", "http") + "/v2/health/live", timeout=10).read()
        # An unknown certificate is refused by the client.
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(srv.http_url + "/v2/health/live", timeout=10)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(srv.grpc_address, creds) as ch:
            live = ch.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                  request_serializer=pb.ServerLiveRequest.SerializeToString,
                                  response_deserializer=pb.ServerLiveResponse.FromString)
            assert live(pb.ServerLiveRequest(), timeout=10).live
        with grpc.insecure_channel(srv.grpc_address) as ch:  # clear text to the TLS port: no answer
            live = ch.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                  request_serializer=pb.ServerLiveRequest.SerializeToString,
                                  response_deserializer=pb.ServerLiveResponse.FromString)
            with pytest.raises(grpc.RpcError):
                live(pb.ServerLiveRequest(), timeout=5)
    assert srv.proc.returncode == 0, srv.log_tail()
