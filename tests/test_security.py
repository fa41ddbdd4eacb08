"""A closed control plane: the embedded Triton listens on loopback only, and its whole admin
surface (model repository, model configurations, statistics, trace, logging, shared memory)
refuses callers without the admin key while inference, health and metadata stay open."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from core.contract import ARTIST_INPUT, PAIR_SCORER, SERVED_MODELS, USER_INPUT
from export.repository import export_run
from loadtests.faults import listening
from serving import admin_key
from serving.processes import free_port
from serving.triton_server import TritonConfig, TritonServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton(run_dir, tmp_path_factory):
    repo = tmp_path_factory.mktemp("security") / "model_repository"
    export_run(run_dir, repo)
    cfg = TritonConfig(repo, free_port(), free_port(), free_port(), load_models=SERVED_MODELS,
                       log_file=repo.parent / "triton.log")  # fmt: skip
    with TritonServer(cfg) as server:
        yield server


def test_triton_listens_on_loopback_only(triton):
    cfg = triton.config
    for port in (cfg.http_port, cfg.grpc_port, cfg.metrics_port):
        assert listening(port) == {"127.0.0.1"}, port


def test_model_control_needs_the_key_and_inference_does_not(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    for call in (lambda h: client.unload_model(PAIR_SCORER, headers=h),
                 lambda h: client.load_model(PAIR_SCORER, headers=h),
                 lambda h: client.get_model_repository_index(headers=h)):  # fmt: skip
        wrong_key = admin_key.headers("not-the-key-at-all-but-long-enough")
        for wrong in (None, {"musicrec-admin-key": triton.admin_key}, wrong_key):
            with pytest.raises(InferenceServerException, match="restricted|expecting header"):
                call(wrong)
    assert client.is_model_ready(PAIR_SCORER, "1")  # nothing was unloaded

    inputs = [grpcclient.InferInput(USER_INPUT, [1, 1], "INT32"),
              grpcclient.InferInput(ARTIST_INPUT, [1, 1], "INT32")]  # fmt: skip
    for tensor in inputs:
        tensor.set_data_from_numpy(np.zeros((1, 1), np.int32))
    assert client.infer(PAIR_SCORER, inputs).as_numpy("score").shape == (1, 1)

    index = client.get_model_repository_index(headers=triton.admin_headers)
    assert {m.name for m in index.models} >= set(SERVED_MODELS)
    client.load_model(PAIR_SCORER, headers=triton.admin_headers)


# Every HTTP endpoint of Triton 2.51 that is not inference, health or metadata: (method, path,
# body). Answers with the key are 200 (or 400 for a model with no trace of its own).
ADMIN_HTTP = [
    ("GET", "/v2/logging", None),
    ("POST", "/v2/logging", {"log_info": False}),
    ("GET", "/v2/trace/setting", None),
    ("POST", "/v2/trace/setting", {"trace_rate": "1000"}),
    ("GET", f"/v2/models/{PAIR_SCORER}/trace/setting", None),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", "/v2/systemsharedmemory/unregister", None),
    ("GET", "/v2/cudasharedmemory/status", None),
    ("POST", "/v2/cudasharedmemory/unregister", None),
    ("GET", "/v2/models/stats", None),
    ("GET", f"/v2/models/{PAIR_SCORER}/stats", None),
    ("GET", f"/v2/models/{PAIR_SCORER}/config", None),
    ("POST", "/v2/repository/index", {}),
    ("POST", f"/v2/repository/models/{PAIR_SCORER}/load", {}),
]
OPEN_HTTP = [
    "/v2/health/live",
    "/v2/health/ready",
    "/v2",
    f"/v2/models/{PAIR_SCORER}",
    f"/v2/models/{PAIR_SCORER}/ready",
    f"/v2/models/{PAIR_SCORER}/versions/1/ready",
]


def _http(triton, method: str, path: str, body=None, headers=None) -> tuple[int, str]:
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{triton.http_url}{path}", data=data,
                                     method=method, headers=headers or {})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_whole_admin_surface_needs_the_key_over_http(triton):
    key = {admin_key.HEADER: triton.admin_key}
    unkeyed = []
    for method, path, body in ADMIN_HTTP:
        for wrong in (None, {admin_key.HEADER: "not-the-key-at-all-but-long-enough"}):
            code, text = _http(triton, method, path, body, wrong)
            if code == 200 or "restricted" not in text.lower():
                unkeyed.append((method, path, code, text[:80]))
        code, text = _http(triton, method, path, body, key)
        assert code == 200, (method, path, code, text)
    assert unkeyed == []
    _http(triton, "POST", "/v2/logging", {"log_info": True}, key)
    for path in OPEN_HTTP:
        assert _http(triton, "GET", path)[0] == 200, path


def test_the_whole_admin_surface_needs_the_key_over_grpc(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    calls = {
        "log settings": lambda h: client.get_log_settings(headers=h),
        "update log settings": lambda h: client.update_log_settings(
            {"log_info": True}, headers=h
        ),  # fmt: skip
        "trace settings": lambda h: client.get_trace_settings(headers=h),
        "model trace settings": lambda h: client.get_trace_settings(PAIR_SCORER, headers=h),
        "system shm status": lambda h: client.get_system_shared_memory_status(headers=h),
        "system shm unregister": lambda h: client.unregister_system_shared_memory(headers=h),
        "cuda shm status": lambda h: client.get_cuda_shared_memory_status(headers=h),
        "statistics": lambda h: client.get_inference_statistics(headers=h),
        "model statistics": lambda h: client.get_inference_statistics(PAIR_SCORER, headers=h),
        "model config": lambda h: client.get_model_config(PAIR_SCORER, headers=h),
        "repository index": lambda h: client.get_model_repository_index(headers=h),
    }
    unkeyed = []
    for name, call in calls.items():
        try:
            call(None)
            unkeyed.append(name)
        except InferenceServerException as exc:
            if "restricted" not in str(exc).lower() and "expecting header" not in str(exc):
                unkeyed.append(f"{name}: {exc}")
        call(triton.admin_headers)  # answers with the key
    assert unkeyed == []
    for open_call in (client.is_server_live, client.is_server_ready, client.get_server_metadata,
                      lambda: client.get_model_metadata(PAIR_SCORER)):  # fmt: skip
        assert open_call()


def _certificates(directory: Path) -> None:
    """A CA made now, a server certificate for 127.0.0.1 and a client certificate it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def issue(name: str, key, issuer_name, issuer_key, *, ca: bool, san=None):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                  critical=True))  # fmt: skip
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name: str, key, cert) -> None:
        (directory / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))  # fmt: skip
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "musicrec test CA")])
    ca = issue("musicrec test CA", ca_key, ca_name, ca_key, ca=True)
    write("ca", ca_key, ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    write("server", server_key, issue("gateway", server_key, ca_name, ca_key, ca=False, san=san))
    client_key = ec.generate_private_key(ec.SECP256R1())
    write("client", client_key, issue("a service", client_key, ca_name, ca_key, ca=False))


def test_gateway_serves_mutual_tls_and_checks_bearer_tokens(triton, tmp_path):
    import grpc

    from client import Credentials, RecommenderClient, RecommenderError
    from gateway.config import GatewayConfig
    from serving.gateway_process import GatewayProcess, health_status

    _certificates(tmp_path)
    token = tmp_path / "token"
    token.write_text("a-long-random-bearer-token-value\n")
    config = GatewayConfig(
        port=free_port(), metrics_port=0, triton_url=triton.grpc_url, backend="cpu",
        repository=triton.config.repository, tls_cert_file=tmp_path / "server.pem",
        tls_key_file=tmp_path / "server.key", tls_client_ca_file=tmp_path / "ca.pem",
        token_file=token,
    )  # fmt: skip
    ca, cert, key = (tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key")
    mtls = Credentials(ca, cert, key)
    probe = mtls.channel_credentials()
    with GatewayProcess(config, tmp_path / "gw.log", probe_credentials=probe) as gw:
        assert health_status(gw.address) == "UNREACHABLE"  # plaintext gets nowhere
        assert health_status(gw.address, credentials=Credentials(ca).channel_credentials()) == (
            "UNREACHABLE")  # TLS without a client certificate: refused  # fmt: skip
        assert health_status(gw.address, credentials=probe) == "SERVING"  # health needs no token

        def recommend(credentials: Credentials):
            with RecommenderClient(gw.address, timeout_s=5, credentials=credentials) as client:
                return client.serving_info()

        for wrong in (None, "not-the-right-token-at-all"):
            with pytest.raises(RecommenderError) as err:
                recommend(Credentials(ca, cert, key, wrong))
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert recommend(Credentials(ca, cert, key, token.read_text().strip())).model_version == 1

    with pytest.raises(ValueError, match="plaintext on 0.0.0.0 is refused"):
        GatewayConfig(host="0.0.0.0")


def test_reflection_needs_the_token_when_one_is_set(triton, tmp_path):
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from gateway.config import GatewayConfig
    from serving.gateway_process import GatewayProcess

    token = tmp_path / "token"
    token.write_text("a-long-random-bearer-token-value\n")
    config = GatewayConfig(port=free_port(), metrics_port=0, triton_url=triton.grpc_url,
                           backend="cpu", repository=triton.config.repository,
                           token_file=token)  # fmt: skip

    def list_services(metadata=None) -> list[str]:
        with grpc.insecure_channel(gw.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            ask = reflection_pb2.ServerReflectionRequest(list_services="")
            replies = stub.ServerReflectionInfo(iter([ask]), metadata=metadata, timeout=5)
            return [s.name for r in replies for s in r.list_services_response.service]

    with GatewayProcess(config, tmp_path / "gw.log") as gw:
        for wrong in (None, (("authorization", "Bearer not-the-right-token-at-all"),)):
            with pytest.raises(grpc.RpcError) as err:
                list_services(wrong)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer a-long-random-bearer-token-value"),)
        assert "musicrec.v1.Recommender" in list_services(good)


def test_swapped_or_mismatched_certificate_and_key_exit_with_one_line(triton, tmp_path):
    import os
    import subprocess

    from gateway.config import GatewayConfig
    from serving.gateway_process import command

    _certificates(tmp_path)
    cases = {
        "swapped": (tmp_path / "server.key", tmp_path / "server.pem", "not a PEM certificate"),
        "mismatched": (tmp_path / "server.pem", tmp_path / "client.key", "does not match"),
    }
    for cert, key, says in cases.values():
        config = GatewayConfig(port=free_port(), metrics_port=0, triton_url=triton.grpc_url,
                               backend="cpu", tls_cert_file=cert, tls_key_file=key)  # fmt: skip
        done = subprocess.run(command(config), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
        assert len(lines) == 1 and says in lines[0], done.stderr
        assert str(cert) in lines[0] and str(key) in lines[0]
        assert "Traceback" not in done.stderr and "Failed to bind" not in done.stderr


def test_tls_handshake_failures_are_json_lines_in_the_log(triton, tmp_path):
    import json

    from client import Credentials
    from gateway.config import GatewayConfig
    from serving.gateway_process import GatewayProcess, health_status

    _certificates(tmp_path)
    config = GatewayConfig(port=free_port(), metrics_port=0, triton_url=triton.grpc_url,
                           backend="cpu", repository=triton.config.repository,
                           tls_cert_file=tmp_path / "server.pem",
                           tls_key_file=tmp_path / "server.key")  # fmt: skip
    probe = Credentials(tmp_path / "ca.pem").channel_credentials()
    log = tmp_path / "gw.log"
    with GatewayProcess(config, log, probe_credentials=probe) as gw:
        for _ in range(3):
            assert health_status(gw.address) == "UNREACHABLE"  # plaintext: handshake fails
        assert health_status(gw.address, credentials=probe) == "SERVING"
    text = log.read_text()
    entries = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    native = [e for e in entries if e["logger"] == "grpc.core"]
    assert any("handshake" in e["msg"].lower() for e in native), text[-2000:]
