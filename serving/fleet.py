"""Every Triton replica ``deploy`` must drive, as one.

The replicas share one model repository (a directory here; object storage such as ``s3://`` on
a cluster), so a version's files and its pinned configuration are written once; what each
replica must be told separately is to load them. A target names the replicas as the gateway's
does (``core/endpoints.py``: a list, or a ``dns:///`` name resolving to each pod).
"""

from __future__ import annotations

import json
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from core.contract import SERVED_MODELS, common_versions
from core.endpoints import resolve_endpoints


class TritonFleet:
    """One client per replica a target names (resolved once, when the fleet is made)."""

    def __init__(self, target: str) -> None:
        try:
            self.urls = resolve_endpoints(target)
        except OSError as exc:
            raise InferenceServerException(f"cannot resolve {target}: {exc}") from None
        if not self.urls:
            raise InferenceServerException(f"{target} names no Triton replica")
        self.clients = [grpcclient.InferenceServerClient(url) for url in self.urls]

    def served_versions(self, repository: Path) -> set[int]:
        """Versions on disk READY in every served model on every replica (through the open
        readiness API, so ``status`` needs no admin key)."""
        on_disk = common_versions(repository)
        return {
            v for v in on_disk
            if all(c.is_model_ready(m, str(v)) for c in self.clients for m in SERVED_MODELS)
        }  # fmt: skip

    def load_model(self, name: str, headers: dict[str, str] | None) -> None:
        """Ask every replica to (re)load ``name`` from its configuration; the first refusal
        raises, naming the replica."""
        for url, client in zip(self.urls, self.clients, strict=True):
            _load(url, client, name, headers)

    def narrow(self, name: str, versions: list[int], headers: dict[str, str] | None) -> bool:
        """Have every replica serve only ``versions`` of ``name`` by loading its running
        configuration with that version policy (Triton's config override). The repository's
        files are left alone, so Triton applies it as a configuration update: no version that
        stays is reloaded, and the others are unloaded after their in-flight requests. False,
        with nothing changed, when a replica does not have ``name`` loaded (load it from the
        repository instead)."""
        try:
            configs = [c.get_model_config(name, headers=headers, as_json=True)["config"]
                       for c in self.clients]  # fmt: skip
        except (InferenceServerException, KeyError):
            return False
        for url, client, config in zip(self.urls, self.clients, configs, strict=True):
            config["version_policy"] = {"specific": {"versions": [str(v) for v in versions]}}
            _load(url, client, name, headers, json.dumps(config))
        return True


def _load(url: str, client: grpcclient.InferenceServerClient, name: str,
          headers: dict[str, str] | None, config: str | None = None) -> None:  # fmt: skip
    """One replica's load of ``name`` (with ``config`` overriding its files); a refusal names
    the replica."""
    try:
        client.load_model(name, headers=headers, config=config)
    except InferenceServerException as exc:
        raise InferenceServerException(f"replica {url}: {exc.message()}",
                                       status=exc.status()) from None  # fmt: skip
