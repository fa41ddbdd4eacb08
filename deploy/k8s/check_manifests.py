"""Deserialise every manifest in deploy/k8s into the official Kubernetes client's models.

Run by tests/test_k8s_manifests.py with ``.venv-infra/bin/python`` (scripts/setup_infra.sh makes
it: the ``kubernetes`` client stays out of the project's own venv and its pins). Prints one JSON
list, an entry per YAML document: its file, kind and name, the model class it became, and what
went wrong (``error``), or which fields did not survive the round trip YAML -> model -> dict
(``lost``: in the file but not in the model, e.g. a misspelt or misplaced key; ``changed``:
a value the model turned into another, e.g. an int where a string belongs).

    .venv-infra/bin/python deploy/k8s/check_manifests.py [DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

HERE = Path(__file__).resolve().parent

# (apiVersion, kind) -> the client's model: only these, so a new kind, or an API version the
# cluster no longer serves (autoscaling/v2beta2, policy/v1beta1), is an error to look at.
MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}


def differences(original: Any, back: Any, path: str = "") -> tuple[list[str], list[str]]:
    """(lost, changed): paths of ``original`` missing from ``back``, or holding another value."""
    lost: list[str] = []
    changed: list[str] = []
    if isinstance(original, dict) and isinstance(back, dict):
        for key, value in original.items():
            here = f"{path}.{key}" if path else str(key)
            if key not in back:
                if value not in (None, {}, []):  # an empty value serialises as nothing
                    lost.append(here)
                continue
            sub_lost, sub_changed = differences(value, back[key], here)
            lost += sub_lost
            changed += sub_changed
    elif isinstance(original, list) and isinstance(back, list) and len(original) == len(back):
        for i, (a, b) in enumerate(zip(original, back, strict=True)):
            sub_lost, sub_changed = differences(a, b, f"{path}[{i}]")
            lost += sub_lost
            changed += sub_changed
    elif original != back or type(original) is not type(back):
        changed.append(f"{path}: {original!r} -> {back!r}")
    return lost, changed


def check_document(api: client.ApiClient, doc: dict) -> dict[str, Any]:
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    entry: dict[str, Any] = {
        "kind": kind,
        "apiVersion": api_version,
        "name": (doc.get("metadata") or {}).get("name"),
        "namespace": (doc.get("metadata") or {}).get("namespace"),
    }
    model = MODELS.get((api_version, kind))
    if model is None:
        entry["error"] = f"no client model for apiVersion {api_version!r} kind {kind!r}"
        return entry
    entry["model"] = model
    try:
        obj = api._ApiClient__deserialize(json.loads(json.dumps(doc)), model)
    except (ValueError, TypeError, AttributeError) as exc:  # a required field missing, bad type
        entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry
    entry["model_class"] = type(obj).__name__
    back = api.sanitize_for_serialization(obj)
    entry["lost"], entry["changed"] = differences(doc, back)
    extra, _ = differences(back, doc)  # the model added nothing either
    entry["added"] = extra
    return entry


def check(root: Path) -> list[dict[str, Any]]:
    api = client.ApiClient()
    results = []
    for path in sorted(root.rglob("*.yaml")):
        rel = str(path.relative_to(root))
        if path.name == "kustomization.yaml":
            continue  # kustomize's own file, not a Kubernetes object (the test checks it)
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            results.append({"file": rel, "index": 0, "error": f"YAML: {exc}"})
            continue
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                results.append({"file": rel, "index": index, "error": "not a mapping"})
                continue
            results.append({"file": rel, "index": index, **check_document(api, doc)})
    return results


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else HERE
    results = check(root)
    print(json.dumps(results, indent=1))
    bad = [r for r in results if r.get("error") or r.get("lost") or r.get("changed")]
    return 1 if bad or not results else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
