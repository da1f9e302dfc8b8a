"""The rendered manifests fit together and fit the code (tests/deploy/wiring.py), and every check fails on a
deliberately broken copy: a mutated rendered object, or a copy of the tree broken on disk and rendered again."""
from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import wiring
from tests.deploy.conftest import OVERLAYS

Objects = list[dict[str, Any]]


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    return next(obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name)


def container(objects: Objects, deployment: str) -> dict[str, Any]:
    return find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def env(objects: Objects, deployment: str, name: str) -> dict[str, Any]:
    return next(variable for variable in container(objects, deployment)["env"] if variable["name"] == name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_wiring_holds(overlay: str, rendered: dict[str, Objects]) -> None:
    problems = wiring.check(rendered[overlay])
    assert not problems, "\n".join(map(str, problems))


def test_the_argocd_sources_are_kustomizations_of_this_repository(argocd: Objects) -> None:
    assert [where for where, _ in wiring.argocd_applications(argocd)] == [
        "Application/whisper-platform",
        "ApplicationSet/whisper-platform -> whisper-staging",
        "ApplicationSet/whisper-platform -> whisper-production",
    ]
    assert wiring.check(argocd) == []


def test_the_secret_table_lists_exactly_the_keys_in_use(rendered: dict[str, Objects]) -> None:
    used = {(name, key) for objects in rendered.values() for _, name, key in wiring.secret_references(objects)}
    assert used == wiring.documented_secrets()


def test_the_service_facts_come_from_the_real_apps() -> None:
    facts = wiring.service_facts()
    faster, whisperx = facts["whisper-platform/whisper-faster"], facts["whisper-platform/whisperx"]
    assert {"/health", "/health/ready", "/health/activity", "/metrics"} <= faster.get_routes & whisperx.get_routes
    assert {"WHISPER__MODEL", "API_KEYS", "DATA_DIR", "JOBS_DATABASE_URL"} <= faster.env & whisperx.env
    assert "HF_TOKEN" in whisperx.env and "DIARIZATION__BACKEND" in whisperx.env
    assert "DIARIZATION__BACKEND" not in faster.env
    assert {"whisper_faster_http_requests_total", "whisper_faster_inference_seconds_bucket"} <= faster.metrics
    assert "whisper_faster_http_requests" not in faster.metrics  # a counter is only queryable as ..._total


def test_promql_metric_names() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(whisper_faster_http_request_duration_seconds_bucket'
        '{namespace="$namespace", route=~"/v1/.*"}[$__rate_interval]))) > 2 and on (job) up offset 5m == 1'
    )
    assert wiring.promql_metric_names(expr) == {"whisper_faster_http_request_duration_seconds_bucket", "up"}


def test_the_queue_query_runs_against_the_jobs_schema() -> None:
    assert wiring.check_queue_query("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')") is None
    assert wiring.check_queue_query(
        "SELECT count(*) FROM jobs WHERE status = 'queued' AND queue = 'whisperx'", queue="whisperx"
    ) is None
    assert "queue 'whisperx'" in (wiring.check_queue_query("SELECT count(*) FROM jobs WHERE status = 'queued'", queue="whisperx") or "")
    assert "waiting" in (wiring.check_queue_query("SELECT count(*) FROM jobs WHERE status = 'waiting'") or "")
    assert "no such table" in (wiring.check_queue_query("SELECT count(*) FROM job_queue") or "")
    assert "one integer" in (wiring.check_queue_query("SELECT id FROM jobs") or "")


Breakage = Callable[[Objects], None]


def _set(target: dict[str, Any], **values: Any) -> None:
    target.update(values)


BROKEN: dict[str, tuple[str, Breakage, str]] = {
    "service-selects-nothing": (
        "overlays/gpu",
        lambda o: _set(find(o, "Service", "whisperx")["spec"]["selector"], **{"app.kubernetes.io/name": "whisper-x"}),
        "Service/whisperx: selector",
    ),
    "service-target-port": (
        "base",
        lambda o: find(o, "Service", "whisper-faster")["spec"]["ports"][0].update(targetPort="web"),
        "targetPort 'web' is no container port",
    ),
    "ingress-backend": (
        "base",
        lambda o: find(o, "Ingress", "whisper")["spec"]["rules"][1]["http"]["paths"][0]["backend"]["service"].update(name="whisper-x"),
        "routes to Service whisper-x, which does not exist",
    ),
    "probe-path": (
        "base",
        lambda o: container(o, "whisperx")["startupProbe"]["httpGet"].update(path="/healthz"),
        "startupProbe path '/healthz' is no GET route of whisper-platform/whisperx",
    ),
    "probe-path-of-the-other-service": (
        "base",
        lambda o: container(o, "whisper-faster")["livenessProbe"]["httpGet"].update(path="/transcribe"),
        "livenessProbe path '/transcribe' is no GET route",
    ),
    "probe-port": (
        "overlays/gpu",
        lambda o: container(o, "whisperx-worker")["readinessProbe"]["httpGet"].update(port=8000),
        "readinessProbe port 8000 is no container port",
    ),
    "env-unknown": (
        "base",
        lambda o: env(o, "whisper-faster", "WHISPER__MODEL").update(name="WHISPER__MODLE"),
        "env WHISPER__MODLE is no setting",
    ),
    "env-of-the-other-service": (
        "base",
        lambda o: container(o, "whisper-faster")["env"].append({"name": "DIARIZATION__BACKEND", "value": "auto"}),
        "env DIARIZATION__BACKEND is no setting of whisper-platform/whisper-faster",
    ),
    "uvicorn-port": (
        "base",
        lambda o: env(o, "whisperx", "UVICORN_PORT").update(value="8000"),
        "UVICORN_PORT=8000 is no container port",
    ),
    "writable-root-filesystem": (
        "overlays/gpu",
        lambda o: container(o, "whisperx-worker")["securityContext"].update(readOnlyRootFilesystem=False),
        "Deployment/whisperx-worker container whisperx: root filesystem is writable",
    ),
    "root-user": (
        "base",
        lambda o: find(o, "Deployment", "whisperx")["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
        "Deployment/whisperx container whisperx: may run as root",
    ),
    "secret-key-undocumented": (
        "base",
        lambda o: env(o, "whisperx", "HF_TOKEN")["valueFrom"]["secretKeyRef"].update(key="token"),
        "Secret whisper-hf-token key token is not documented",
    ),
    "basic-auth-secret-undocumented": (
        "base",
        lambda o: find(o, "Ingress", "whisper")["metadata"]["annotations"].update(
            {"nginx.ingress.kubernetes.io/auth-secret": "htpasswd"}
        ),
        "Secret htpasswd key auth is not documented",
    ),
    "configmap-missing": (
        "overlays/gpu",
        lambda o: o.remove(find(o, "ConfigMap", "whisper-drain")),
        "ConfigMap whisper-drain is not in the manifests",
    ),
    "volume-claim-missing": (
        "base",
        lambda o: o.remove(find(o, "PersistentVolumeClaim", "whisperx-data")),
        "PersistentVolumeClaim whisperx-data is not in the manifests",
    ),
    "http-scaled-object-host": (
        "overlays/scale-to-zero",
        lambda o: find(o, "HTTPScaledObject", "whisperx")["spec"].update(hosts=["whisperx.example.org"]),
        "host whisperx.example.org is not an Ingress host routed to the KEDA interceptor",
    ),
    "ingress-host-unclaimed": (
        "overlays/scale-to-zero",
        lambda o: find(o, "Ingress", "whisper")["spec"]["rules"][0].update(host="whisper.example.org"),
        "host whisper.example.org goes to the KEDA interceptor but no HTTPScaledObject claims it",
    ),
    "http-scaled-object-target": (
        "overlays/gpu",
        lambda o: find(o, "HTTPScaledObject", "whisper-faster")["spec"]["scaleTargetRef"].update(name="whisper-faster-worker"),
        "Service whisper-faster does not select the pods of Deployment/whisper-faster-worker",
    ),
    "scaledown-period": (
        "overlays/gpu",
        lambda o: find(o, "HTTPScaledObject", "whisperx")["spec"].update(scaledownPeriod=300),
        "scaledownPeriod 300 is not the proxy's idleTimeout (900 s) for whisperx.example.com",
    ),
    "http-scaled-object-port": (
        "overlays/scale-to-zero",
        lambda o: find(o, "HTTPScaledObject", "whisperx")["spec"]["scaleTargetRef"].update(port=8000),
        "Service whisperx has no port 8000",
    ),
    "volume-shared-by-several-pods": (
        "overlays/scale-to-zero",
        lambda o: find(o, "HTTPScaledObject", "whisperx")["spec"]["replicas"].update(max=3),
        "PersistentVolumeClaim/whisperx-models: up to 3 pods mount it, but its access modes are ['ReadWriteOnce']",
    ),
    "sqlite-queue-shared": (
        "overlays/gpu",
        lambda o: container(o, "whisper-faster-worker")["env"].remove(env(o, "whisper-faster-worker", "JOBS_DATABASE_URL")),
        "Deployment/whisper-faster-worker would keep the jobs and live sessions in SQLite files there",
    ),
    "scaled-object-env": (
        "overlays/gpu",
        lambda o: find(o, "ScaledObject", "whisperx-worker")["spec"]["triggers"][0]["metadata"].update(
            connectionFromEnv="DATABASE_URL"
        ),
        "connectionFromEnv DATABASE_URL is no env var of container whisperx",
    ),
    "scaled-object-query": (
        "overlays/gpu",
        lambda o: find(o, "ScaledObject", "whisper-faster-worker")["spec"]["triggers"][0]["metadata"].update(
            query="SELECT count(*) FROM jobs WHERE status = 'pending' AND queue = 'whisper_faster'"
        ),
        "status 'pending' is no job status",
    ),
    "scaled-object-other-queue": (
        "overlays/gpu",
        lambda o: find(o, "ScaledObject", "whisperx-worker")["spec"]["triggers"][0]["metadata"].update(
            query="SELECT count(*) FROM jobs WHERE status = 'queued' AND queue = 'whisper_faster'"
        ),
        "must count only queue 'whisperx'",
    ),
    "alert-metric": (
        "monitoring",
        lambda o: find(o, "PrometheusRule", "whisper")["spec"]["groups"][0]["rules"][-1].update(
            expr='sum(rate(whisper_faster_http_requests{status=~"5.."}[5m])) > 0'
        ),
        "metric whisper_faster_http_requests is exported by none",
    ),
    "dashboard-metric": (
        "monitoring",
        lambda o: find(o, "ConfigMap", "whisper-grafana-dashboard")["data"].update(
            {"whisper-platform.json": find(o, "ConfigMap", "whisper-grafana-dashboard")["data"]["whisper-platform.json"]
             .replace("whisper_faster_realtime_sessions{", "whisper_faster_realtime_session{")}
        ),
        "metric whisper_faster_realtime_session is exported by none",
    ),
    "servicemonitor-secret": (
        "monitoring",
        lambda o: find(o, "ServiceMonitor", "whisper")["spec"]["endpoints"][0]["authorization"]["credentials"].update(
            key="token"
        ),
        "Secret whisper-api-keys key token is not documented",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_a_broken_reference_is_reported(breakage: str, rendered: dict[str, Objects]) -> None:
    overlay, breaker, expected = BROKEN[breakage]
    objects = copy.deepcopy(rendered[overlay])
    assert wiring.check(objects) == []
    breaker(objects)
    problems = [str(problem) for problem in wiring.check(objects)]
    assert any(expected in problem for problem in problems), problems


def test_a_broken_argocd_path_is_reported(argocd: Objects) -> None:
    objects = copy.deepcopy(argocd)
    find(objects, "ApplicationSet", "whisper-platform")["spec"]["generators"][0]["list"]["elements"][0]["overlay"] = "cpu"
    problems = [str(problem) for problem in wiring.check(objects)]
    assert problems == [
        "ApplicationSet/whisper-platform -> whisper-staging: source path deploy/kubernetes/overlays/cpu is no "
        "kustomization in this repository"
    ]


def test_a_tree_broken_on_disk_is_reported_after_rendering(tmp_path: Path) -> None:
    """The whole path: a copy of deploy/kubernetes with one edit, rendered by kubectl, checked."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(wiring.KUSTOMIZE_ROOT, tree)
    manifest = tree / "base" / "whisper-faster.yaml"
    text = manifest.read_text()
    assert text.count("path: /health\n") == 1
    manifest.write_text(text.replace("path: /health\n", "path: /healthz\n"))
    hosts = tree / "overlays" / "scale-to-zero" / "http-scaled-objects.yaml"
    hosts.write_text(hosts.read_text().replace("- whisperx.example.com", "- whisperx.example.net"))

    problems = [str(problem) for problem in wiring.check(wiring.render(tree / "overlays" / "gpu"))]
    assert any("livenessProbe path '/healthz' is no GET route of whisper-platform/whisper-faster" in p for p in problems)
    assert any("host whisperx.example.net is not an Ingress host" in p for p in problems)
    assert any("host whisperx.example.com goes to the KEDA interceptor but no HTTPScaledObject claims it" in p for p in problems)
