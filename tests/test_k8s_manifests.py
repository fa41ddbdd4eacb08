"""deploy/k8s: the Kubernetes manifests parse into the official client's models, pass checkov, and
keep the invariants the README promises (pinned images, probes, limits, non-root, a GPU for
Triton, a headless Triton Service, no secret values, HPAs on real Deployments, and network
policies that let only the gateways and the deploy Job reach Triton's gRPC port).

No cluster runs here: tools check the files. The ``kubernetes`` client and checkov live in
.venv-infra (scripts/setup_infra.sh, pinned by requirements-infra.lock), apart from the
project's own pins; a missing .venv-infra fails these tests, it never skips them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
INFRA = ROOT / ".venv-infra" / "bin"
NAMESPACE = "musicrec"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

MODEL_OF_KIND = {
    "Namespace": "V1Namespace",
    "ServiceAccount": "V1ServiceAccount",
    "ConfigMap": "V1ConfigMap",
    "Service": "V1Service",
    "PersistentVolumeClaim": "V1PersistentVolumeClaim",
    "Deployment": "V1Deployment",
    "Job": "V1Job",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
    "PodDisruptionBudget": "V1PodDisruptionBudget",
    "NetworkPolicy": "V1NetworkPolicy",
}


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _load() -> list[tuple[Path, dict]]:
    return [
        (path, doc)
        for path in _manifest_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


DOCS = _load()
OBJECTS = [doc for _, doc in DOCS]


def _objects(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in OBJECTS if o["kind"] == kind}


DEPLOYMENTS = _objects("Deployment")
JOBS = _objects("Job")
WORKLOADS = {**DEPLOYMENTS, **JOBS}
SERVICES = _objects("Service")
TRITON = DEPLOYMENTS["triton"]
GATEWAY = DEPLOYMENTS["musicrec-gateway"]
DEPLOY_JOB = JOBS["musicrec-deploy"]


def _pod(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _containers(workload: dict) -> list[dict]:
    pod = _pod(workload)
    return pod["containers"] + pod.get("initContainers", [])


def _pod_labels(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def _infra(tool: str) -> Path:
    path = INFRA / tool
    if not path.is_file():
        pytest.fail(f"{path} is missing: run scripts/setup_infra.sh (scripts/test.sh does)")
    return path


# ------------------------------------------------------------------ (a) the client's models


@pytest.fixture(scope="module")
def deserialised() -> list[dict]:
    result = subprocess.run(
        [str(_infra("python")), str(K8S / "check_manifests.py"), str(K8S)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def test_every_manifest_deserialises_into_the_kubernetes_client_models(deserialised):
    assert len(deserialised) == len(DOCS) > 0
    assert {e["file"] for e in deserialised} == {str(p.relative_to(K8S)) for p in _manifest_files()}
    for entry in deserialised:
        where = f"{entry['file']} #{entry['index']} ({entry.get('kind')} {entry.get('name')})"
        assert not entry.get("error"), f"{where}: {entry.get('error')}"
        assert entry["model_class"] == MODEL_OF_KIND[entry["kind"]], where
        # Nothing silently dropped (a misspelt or misplaced key) or converted on the way.
        assert entry["lost"] == [], f"{where}: fields the model does not know: {entry['lost']}"
        assert entry["changed"] == [], f"{where}: values changed: {entry['changed']}"
        assert entry["added"] == [], f"{where}: fields the model added: {entry['added']}"


def test_the_checker_notices_a_misspelt_field(tmp_path):
    """The round trip catches what a plain YAML parse lets through."""
    broken = yaml.safe_load((K8S / "base" / "gateway-pdb.yaml").read_text())
    broken["spec"]["minAvailabe"] = 1  # sic
    (tmp_path / "pdb.yaml").write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [str(_infra("python")), str(K8S / "check_manifests.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)[0]["lost"] == ["spec.minAvailabe"]


def test_each_kustomization_lists_every_file_in_its_folder():
    folders = {p.parent for p in _manifest_files()}
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert {k.parent for k in kustomizations} == folders, "a manifest folder lacks kustomization"
    for k in kustomizations:
        listed = yaml.safe_load(k.read_text())["resources"]
        present = sorted(p.name for p in k.parent.glob("*.yaml") if p != k)
        assert sorted(listed) == present, k
        assert len(listed) == len(set(listed)), k


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
@pytest.mark.parametrize("folder", ["base", "monitoring", "deploy-job"])
def test_kustomize_builds(folder):
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / folder)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert built and all(d["metadata"].get("namespace") or d["kind"] == "Namespace" for d in built)


# ------------------------------------------------------------------ (b) checkov


CHECKOV_FLAGS = ("--skip-download", "--compact", "--quiet", "-o", "json")


def _checkov(*targets: str) -> list[dict]:
    """checkov's JSON reports; its own failures (not findings) fail the test here."""
    result = subprocess.run(
        [str(_infra("checkov")), *targets, *CHECKOV_FLAGS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    try:
        reports = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"checkov exited {result.returncode}: {result.stderr[-4000:]}")
    reports = reports if isinstance(reports, list) else [reports]
    assert _failed(reports) == []  # before the exit status: name the checks that failed
    assert result.returncode == 0, result.stderr[-4000:]
    return reports


def _failed(reports: list[dict]) -> list[str]:
    return [
        f"{r['check_type']}: {c['check_id']} {c['check_name']} ({c['file_path']} "
        f"{c['resource']})"
        for r in reports
        for c in r["results"].get("failed_checks", [])
    ]


SKIP = re.compile(r"(CKV2?_K8S_\d+)=([^=]{40,})")


def _skip_annotations() -> list[tuple[str, str]]:
    found = []
    for o in OBJECTS:
        for key, value in (o["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                found.append((f"{o['kind']}/{o['metadata']['name']}", value))
    return found


def test_checkov_passes_the_manifests():
    reports = _checkov("-d", "deploy/k8s")
    summary = {r["check_type"]: r["summary"] for r in reports}
    assert summary["kubernetes"]["passed"] > 200, summary
    assert all(s["parsing_errors"] == 0 for s in summary.values()), summary
    # Every skip is an annotation of ours, each with its reason (next test).
    assert summary["kubernetes"]["skipped"] == len(_skip_annotations()), summary


def test_checkov_passes_the_dockerfile_and_compose_file():
    # checkov has no Compose framework: on docker-compose.yml only its secrets scanner runs
    # (a finding would show as a "secrets" report); tests/test_deployment_files.py checks the
    # Compose file's own invariants.
    reports = _checkov("-f", "gateway/Dockerfile", "-f", "docker-compose.yml")
    summary = {r["check_type"]: r["summary"] for r in reports}
    assert summary["dockerfile"]["passed"] > 0 and summary["dockerfile"]["skipped"] == 0, summary


def test_every_checkov_skip_says_why():
    skips = _skip_annotations()
    assert skips, "expected the documented skips (image digests, Triton's uid and key flag)"
    for where, value in skips:
        assert SKIP.fullmatch(value.strip()), (
            f"{where}: checkov.io/skip needs 'CKV_ID=reason' " "with one '=' and a real reason"
        )


# ------------------------------------------------------------------ (c) invariants


def test_every_object_is_namespaced_explicitly():
    for o in OBJECTS:
        if o["kind"] == "Namespace":
            assert o["metadata"]["name"] == NAMESPACE
        elif o["metadata"]["name"] == "musicrec-prometheus-adapter-rules":
            assert o["metadata"]["namespace"] == "monitoring"
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]["name"]


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_images_are_pinned_to_release_tags(name):
    for c in _containers(WORKLOADS[name]):
        image = c["image"]
        repo, _, tag = image.partition("@")[0].rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), image
        assert "/" not in tag, image  # a registry port, not a tag


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_containers_are_confined_and_bounded(name):
    workload = WORKLOADS[name]
    pod = _pod(workload)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    for c in _containers(workload):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0
        assert sc["allowPrivilegeEscalation"] is False
        assert sc.get("privileged", False) is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
        if workload["kind"] == "Deployment":  # a Job runs to completion; nothing routes to it
            assert "readinessProbe" in c and "livenessProbe" in c, c["name"]


def test_triton_runs_as_in_compose_on_a_gpu():
    compose = COMPOSE["services"]["triton"]
    (c,) = _pod(TRITON)["containers"]
    assert c["image"] == compose["image"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    expected = [
        flag.replace(
            "${TRITON_ADMIN_KEY:?set TRITON_ADMIN_KEY (README, GPU host)}", "$(TRITON_ADMIN_KEY)"
        ).replace("--model-repository=/models", "--model-repository=$(MODEL_REPOSITORY)")
        for flag in compose["command"]
    ]
    assert c["args"] == expected
    env = {e["name"]: e for e in c["env"]}
    assert "value" not in env["TRITON_ADMIN_KEY"]
    assert env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == (
        "musicrec-triton-admin-key"
    )
    config = _objects("ConfigMap")["triton-config"]["data"]
    assert config["MODEL_REPOSITORY"] == "/models"  # the PVC by default (README)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    live = c["livenessProbe"]["httpGet"]
    assert live["path"] == "/v2/health/live" and ports[live["port"]] == 8000
    # Ready and started: every served model has a version ready, probed as compose does
    # (issue 23 item 17: /v2/health/ready stays 400 after a repair).
    compose_probe = compose["healthcheck"]["test"][1].replace("$$", "$")
    for probe in ("readinessProbe", "startupProbe"):
        assert c[probe]["exec"]["command"] == ["sh", "-c", compose_probe], probe


def test_triton_is_reached_through_a_headless_service_and_never_from_outside():
    triton = SERVICES["triton-headless"]["spec"]
    assert triton["clusterIP"] == "None"
    assert {p["port"] for p in triton["ports"]} == {8001, 8002}
    assert triton["selector"].items() <= _pod_labels(TRITON).items()
    for name, svc in SERVICES.items():
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", name
        if svc["spec"]["selector"].items() <= _pod_labels(TRITON).items():
            assert not {8000}.intersection(p["port"] for p in svc["spec"]["ports"]), name
    assert not [o for o in OBJECTS if o["kind"] == "Ingress"]


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"flags the command does not accept: {args}")


def test_gateway_flags_are_the_gateways_own_and_point_at_the_headless_service(monkeypatch):
    from gateway.config import ENV_PREFIX, add_arguments, from_arguments

    for var in [v for v in os.environ if v.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(var)
    (c,) = _pod(GATEWAY)["containers"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = from_arguments(_parse(parser, c["args"]))  # the gateway's own validation too
    assert config.triton_url == f"dns:///triton-headless.{NAMESPACE}.svc.cluster.local:8001"
    assert (config.port, config.metrics_port, config.host) == (50051, 9101, "0.0.0.0")
    assert not config.allow_plaintext and config.tls_cert_file and config.token_file
    secret_dirs = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    secret_volumes = {
        v["name"]: v["secret"]["secretName"] for v in _pod(GATEWAY)["volumes"] if "secret" in v
    }
    for path in (config.tls_cert_file, config.tls_key_file, config.token_file):
        assert secret_dirs.get(str(path.parent)) in secret_volumes, path
    svc = SERVICES["musicrec-gateway"]["spec"]
    assert {p["port"] for p in svc["ports"]} == {50051, 9101}
    assert svc["selector"].items() <= _pod_labels(GATEWAY).items()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        command = " ".join(c[probe]["exec"]["command"])
        assert "client.cli --address localhost:50051 --tls-ca" in command and "health" in command


def test_the_deploy_job_runs_musicrec_deploy_with_flags_it_accepts():
    from app.deploy_commands import register

    (c,) = _pod(DEPLOY_JOB)["containers"]
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"), argparse.HelpFormatter)
    args = [a.replace("$(MUSICREC_DEPLOY_VERSION)", "2") for a in c["args"]]
    parsed = _parse(parser, args)
    assert parsed.command == "deploy" and parsed.version == 2
    assert parsed.triton_url == f"dns:///triton-headless.{NAMESPACE}.svc.cluster.local:8001"
    assert parsed.gateway == f"musicrec-gateway.{NAMESPACE}.svc.cluster.local:50051"
    assert str(parsed.admin_key_file).startswith("/var/run/secrets/musicrec/triton-admin-key/")
    assert str(parsed.repository) == "/models"
    assert DEPLOY_JOB["spec"]["backoffLimit"] == 0
    assert _pod(DEPLOY_JOB)["restartPolicy"] == "Never"


SECRET_NAMES = re.compile(r"(?i)(key|token|password|secret|credential)")


def test_no_secret_value_is_in_any_manifest():
    assert not [o for o in OBJECTS if o["kind"] == "Secret"]
    for workload in WORKLOADS.values():
        for c in _containers(workload):
            for e in c.get("env", []):
                if SECRET_NAMES.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], e
    for cm in _objects("ConfigMap").values():
        assert not [k for k in cm.get("data", {}) if SECRET_NAMES.search(k)], cm["metadata"]
    text = "\n".join(p.read_text() for p in sorted(K8S.rglob("*.yaml")))
    for flag in re.findall(r"musicrec-admin-key=(\S+)", text):
        assert flag == "$(TRITON_ADMIN_KEY)", flag
    assert not re.search(
        r"BEGIN [A-Z ]*PRIVATE KEY|stringData:|^data:\s*\n\s+(tls|token)", text, re.M
    )


def test_every_secret_used_is_created_as_the_readme_says():
    used = set()
    for workload in WORKLOADS.values():
        pod = _pod(workload)
        used |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for c in _containers(workload):
            used |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
    readme = (K8S / "README.md").read_text()
    for name in sorted(used):
        assert re.search(rf"kubectl .*create secret \w+ {name}\b", readme), name


def test_hpas_scale_existing_deployments():
    hpas = _objects("HorizontalPodAutoscaler")
    assert set(hpas) == {"triton", "musicrec-gateway"}
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment"), name
        assert target["name"] in DEPLOYMENTS, name
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
    (cpu,) = hpas["musicrec-gateway"]["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    (queue,) = hpas["triton"]["spec"]["metrics"]
    assert queue["type"] == "Pods" and queue["pods"]["metric"]["name"] == "avg_time_queue_us"


def test_the_queue_time_metric_is_the_one_prometheus_adapter_serves():
    config = _objects("ConfigMap")["musicrec-prometheus-adapter-rules"]["data"]["config.yaml"]
    (rule,) = yaml.safe_load(config)["rules"]
    assert rule["name"]["as"] == "avg_time_queue_us"
    assert f'namespace="{NAMESPACE}"' in rule["seriesQuery"]
    for metric in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        assert metric in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_disruption_budgets_cover_the_deployments():
    pdbs = _objects("PodDisruptionBudget")
    assert pdbs["musicrec-gateway"]["spec"]["minAvailable"] == 1
    for name, pdb in pdbs.items():
        assert (
            pdb["spec"]["selector"]["matchLabels"].items() <= _pod_labels(DEPLOYMENTS[name]).items()
        )


# NetworkPolicy: who may reach a pod on a port (a small evaluator of the manifests' policies).


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are evaluated"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peers(pod_labels: dict, port: int) -> list:
    """Every ``from`` peer some policy admits to ``port`` of a pod with ``pod_labels``;
    "anyone" for a rule with no ``from``."""
    peers: list = []
    policies = [
        p
        for p in _objects("NetworkPolicy").values()
        if _selects(p["spec"]["podSelector"], pod_labels)
    ]
    assert policies, f"no NetworkPolicy selects {pod_labels}"
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is None or port in [p["port"] for p in ports]:
                peers += rule.get("from") or ["anyone"]
    return peers


def test_network_policies_deny_by_default():
    deny = _objects("NetworkPolicy")["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert not deny.get("ingress")


def test_only_gateways_and_the_deploy_job_reach_tritons_grpc_port():
    peers = _peers(_pod_labels(TRITON), 8001)
    assert peers and all(set(p) == {"podSelector"} for p in peers), peers  # this namespace
    admitted = {
        name
        for name, w in WORKLOADS.items()
        if any(_selects(p["podSelector"], _pod_labels(w)) for p in peers)
    }
    assert admitted == {"musicrec-gateway", "musicrec-deploy"}
    assert _peers(_pod_labels(TRITON), 8000) == []  # HTTP: the kubelet's probes only


def test_only_prometheus_reaches_the_metrics_ports():
    for labels, port in ((_pod_labels(TRITON), 8002), (_pod_labels(GATEWAY), 9101)):
        peers = _peers(labels, port)
        assert peers, port
        for peer in peers:
            assert peer != "anyone" and set(peer) == {"namespaceSelector", "podSelector"}
            assert peer["namespaceSelector"]["matchLabels"] == {
                "kubernetes.io/metadata.name": "monitoring"
            }
            assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_clients_reach_the_gateway_port():
    assert _peers(_pod_labels(GATEWAY), 50051) == ["anyone"]
