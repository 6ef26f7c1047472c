"""deploy/kubernetes/: the kustomize base and the sandbox overlay rendered by kubectl, checked
against Kubernetes' schemas (kubernetes-validate, strict) and for the settings an operator relies
on: probes, a non-root read-only container, secrets by reference only."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("1.30", "1.34")  # an older cluster still supported upstream, and a recent one
SECRET_LOOKING = [
    re.compile(r"[A-Za-z0-9_-]{1,32}:[A-Za-z0-9+/]{43}="),  # a keyring entry
    re.compile(r"postgres(ql)?(\+\w+)?://"),  # a database URL (with its password)
    re.compile(r"\bdvk_|\bwhsec_"),  # a service key, a webhook secret
]


def render(path: str) -> tuple[str, list[dict[str, Any]]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (.ci/run installs it)")
    done = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout, [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def base() -> tuple[str, list[dict[str, Any]]]:
    return render("deploy/kubernetes")


@pytest.mark.parametrize("path", ["deploy/kubernetes", "deploy/kubernetes/overlays/sandbox"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_resource_passes_the_strict_kubernetes_schema(
    path: str, version: str
) -> None:
    _, docs = render(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on the first error


def test_the_base_holds_the_workload_its_service_budget_policy_and_upgrade_job(
    base: tuple[str, list[dict[str, Any]]],
) -> None:
    kinds = sorted(doc["kind"] for doc in base[1])
    assert kinds == sorted(
        ["Deployment", "Job", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount"]
    )


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_non_root_read_only_without_capabilities_under_the_default_seccomp_profile(
    base: tuple[str, list[dict[str, Any]]], kind: str
) -> None:
    pod = _pod(by_kind(base[1], kind))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # noqa: S108


def test_the_service_is_probed_on_healthz_and_readyz_and_spread_across_nodes(
    base: tuple[str, list[dict[str, Any]]],
) -> None:
    pod = _pod(by_kind(base[1], "Deployment"))
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert "kubernetes.io/hostname" in keys
    selector = by_kind(base[1], "Deployment")["spec"]["selector"]["matchLabels"]
    assert by_kind(base[1], "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert by_kind(base[1], "Service")["spec"]["selector"] == selector


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_the_database_url_and_keyring_come_from_secrets_by_reference(
    base: tuple[str, list[dict[str, Any]]], kind: str
) -> None:
    pod = _pod(by_kind(base[1], kind))
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "delegation-vault", "key": "database-url",
    }  # fmt: skip
    assert "DV_KEYS" not in env  # the keyring is a mounted Secret, named by DV_KEYS_FILE
    keyring = env["DV_KEYS_FILE"]["value"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert (
        keyring.startswith(mounts["keyring"]["mountPath"] + "/") and mounts["keyring"]["readOnly"]
    )
    assert volumes["keyring"]["secret"]["secretName"] == "delegation-vault-keyring"
    assert env["DV_ENV"]["value"] == "production"


def test_no_secret_or_secret_value_is_written_into_the_base(
    base: tuple[str, list[dict[str, Any]]],
) -> None:
    text, docs = base
    assert not [doc for doc in docs if doc["kind"] in {"Secret", "ConfigMap"}]
    for pattern in SECRET_LOOKING:
        assert not pattern.search(text), pattern.pattern
    files = "".join(p.read_text() for p in (ROOT / "deploy" / "kubernetes" / "base").iterdir())
    for pattern in SECRET_LOOKING:
        assert not pattern.search(files), pattern.pattern


def test_the_network_policy_admits_the_ingress_namespace_and_labelled_namespaces_only(
    base: tuple[str, list[dict[str, Any]]],
) -> None:
    policy = by_kind(base[1], "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    sources = [rule["from"] for rule in policy["ingress"]]
    assert sources == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        [
            {
                "namespaceSelector": {
                    "matchLabels": {"delegation-vault.example.com/access": "internal"}
                }
            }
        ],
    ]
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}] for rule in policy["ingress"])


def test_the_sandbox_overlay_runs_the_service_and_the_stand_in_in_one_pod_in_development() -> None:
    _, docs = render("deploy/kubernetes/overlays/sandbox")
    assert "Job" not in {doc["kind"] for doc in docs}
    assert all(
        doc["metadata"].get("namespace") == "delegation-vault-sandbox"
        for doc in docs
        if doc["kind"] != "Namespace"
    )
    pod = _pod(by_kind(docs, "Deployment"))
    service, sandbox = pod["containers"]
    assert sandbox["args"] == ["sandbox"] and service["args"][0] == "serve"
    for container in (service, sandbox):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DV_ENV"] == "development"
        assert env["DATABASE_URL"] == "sqlite:////var/lib/delegation-vault/vault.db"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [v for v in pod["volumes"] if "secret" in v]
