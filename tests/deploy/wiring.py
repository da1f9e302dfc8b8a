"""Checks that the rendered Kubernetes manifests fit together and fit the code they deploy.

`check(objects, facts, documented_secrets)` returns the problems found in one rendered overlay (a list of
Kubernetes objects), each naming the object and what is wrong; an empty list means the wiring holds:

- every Service selects the pods of a Deployment and its target port is one of their container ports;
  every Ingress backend names an existing Service and port;
- every probe's path is a GET route of the service in the image (the real app's route table) and its port
  a container port; every volume names an existing ConfigMap or PersistentVolumeClaim;
- every environment variable is a setting of that service (its pydantic-settings class) or one of the few
  that a library reads itself (`LIBRARY_ENV`), and UVICORN_PORT is the container's port;
- every container runs as non-root with a read-only root filesystem, no privilege escalation, no capabilities,
  the runtime's seccomp profile (Pod Security "restricted");
- every Secret key referenced (env, Ingress auth and TLS, ServiceMonitor credentials) is documented in
  docs/kubernetes.md;
- the HTTPScaledObjects claim exactly the Ingress hosts routed to the KEDA interceptor, their targets exist, and
  their scaledownPeriod is the auto-start proxy's idleTimeout for the same host (autostart/config.json);
- a volume that several pods may mount at once (autoscaler maxima, Deployments sharing it) is ReadWriteMany, and
  a DATA_DIR several pods share holds no SQLite jobs queue or session file;
- each ScaledObject targets a Deployment, reads its connection from an env var of that container, and its
  SQL query runs against the jobs store's real schema and names real job statuses;
- every metric named by a PrometheusRule or the Grafana dashboard exists in the services' registries (built
  in-process from the real apps, jobs and realtime included), the auto-start proxy's, or `EXTERNAL_METRICS`;
- every Argo CD Application (and each one an ApplicationSet's list generator makes) points at a kustomization
  of this repository.

`ServiceFacts` are read from the real code: `service_facts()` builds each FastAPI app without loading a model.
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE_ROOT = REPO / "deploy" / "kubernetes"
DOCS_PAGE = REPO / "docs" / "kubernetes.md"

# Read by a library itself, not by the services' settings classes; each says who reads it.
LIBRARY_ENV: dict[str, str] = {
    "HF_TOKEN": "huggingface_hub: the token for gated or private model downloads (whisperx also has it as a setting)",
}

# Metrics that other components export, with where they come from (checked by name only).
EXTERNAL_METRICS: dict[str, str] = {
    "up": "Prometheus itself: 1 when the last scrape of a target succeeded",
    "kube_deployment_spec_replicas": "kube-state-metrics v2: replicas a Deployment asks for",
    "kube_deployment_status_replicas_available": "kube-state-metrics v2: replicas ready for minReadySeconds",
    "interceptor_request_count_total": "KEDA HTTP add-on interceptor (label `code`): requests it answered",
}

INTERCEPTOR_SERVICE = "keda-add-ons-http-interceptor-proxy"
PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf",
     "nan", "start", "end"}
)


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class ServiceFacts:
    """What one service image accepts: its GET routes, its settings' env names, its metric sample names."""

    get_routes: frozenset[str]
    env: frozenset[str]
    metrics: frozenset[str] = field(default_factory=frozenset)


# --- reading the code --------------------------------------------------------------------------------------------


def _sample_names(registry: Any) -> set[str]:
    """Every series name a registry exposes, derived from its families' types (labelled ones have no sample yet)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


@cache
def service_facts() -> dict[str, ServiceFacts]:
    """Image name (without tag) -> facts, from each real app built in-process with no model to load."""
    from fastapi.testclient import TestClient

    from whisper_common.settings import describe_settings
    from whisper_faster.app import create_app as create_whisper_faster
    from whisper_faster.settings import Settings as WhisperFasterSettings
    from whisperx_api.app import create_app as create_whisperx
    from whisperx_api.settings import WhisperXSettings

    facts: dict[str, ServiceFacts] = {}
    for image, create_app, settings_class in (
        ("whisper-platform/whisper-faster", create_whisper_faster, WhisperFasterSettings),
        ("whisper-platform/whisperx", create_whisperx, WhisperXSettings),
    ):
        with tempfile.TemporaryDirectory() as data_dir:
            settings = settings_class(preload_models="", data_dir=data_dir, jobs_workers=0)
            app = create_app(settings)
            # The lifespan opens the jobs store and registers the collectors that read it when scraped.
            with TestClient(app):
                metrics = _sample_names(app.state.metrics.registry)
            routes = frozenset(
                path for path, operations in app.openapi()["paths"].items() if "get" in operations
            )
        env = frozenset(row["env"] for row in describe_settings(settings_class))
        facts[image] = ServiceFacts(get_routes=routes, env=env, metrics=frozenset(metrics))
    return facts


@cache
def known_metrics() -> frozenset[str]:
    from autostart.status import Metrics as AutostartMetrics

    names = set(EXTERNAL_METRICS) | _sample_names(AutostartMetrics({}).registry)
    for facts in service_facts().values():
        names |= facts.metrics
    return frozenset(names)


def documented_secrets(page: Path = DOCS_PAGE) -> set[tuple[str, str]]:
    """(Secret, key) pairs from the table rows of the docs page: `| \\`name\\` | \\`key\\`, \\`key\\` | ... |`."""
    pairs: set[tuple[str, str]] = set()
    for line in page.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"`[a-z0-9.-]+`", cells[0]):
            continue
        for key in re.findall(r"`([^`]+)`", cells[1]):
            pairs.add((cells[0].strip("`"), key))
    return pairs


def kubectl() -> str:
    path = Path(sys.executable).with_name("kubectl")
    return str(path) if path.exists() else "kubectl"


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <directory>` as a list of objects."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [document for document in yaml.safe_load_all(result.stdout) if document]


# --- the checks --------------------------------------------------------------------------------------------------


def _name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj.get("kind") == kind]


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def _image_name(image: str) -> str:
    return image.split("@", 1)[0].rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image.split("@", 1)[0]


def _port_matches(port: int | str, container_ports: list[dict[str, Any]]) -> bool:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return any(entry.get("containerPort") == int(port) for entry in container_ports)
    return any(entry.get("name") == port for entry in container_ports)


def _selected(service: dict[str, Any], workloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    selector = service["spec"].get("selector") or {}
    namespace = service["metadata"].get("namespace")
    return [
        workload
        for workload in workloads
        if workload["metadata"].get("namespace") == namespace
        and selector
        and selector.items() <= (workload["spec"]["template"]["metadata"].get("labels") or {}).items()
    ]


def check_services(objects: list[dict[str, Any]]) -> Iterator[Problem]:
    workloads = _workloads(objects)
    for service in _of_kind(objects, "Service"):
        spec = service["spec"]
        if spec.get("type") == "ExternalName":
            if not spec.get("externalName"):
                yield Problem(_name(service), "ExternalName Service without externalName")
            continue
        selected = _selected(service, workloads)
        if not selected:
            yield Problem(_name(service), f"selector {spec.get('selector')} selects no pod of any workload")
        for port in spec.get("ports", []):
            target = port.get("targetPort", port["port"])
            for workload in selected:
                ports = [entry for container in _containers(workload) for entry in container.get("ports", [])]
                if not _port_matches(target, ports):
                    yield Problem(_name(service), f"targetPort {target!r} is no container port of {_name(workload)}")


def _service_ports(objects: list[dict[str, Any]], namespace: str | None, name: str) -> list[dict[str, Any]] | None:
    for service in _of_kind(objects, "Service"):
        if service["metadata"]["name"] == name and service["metadata"].get("namespace") == namespace:
            return list(service["spec"].get("ports", []))
    return None


def _ingress_backends(ingress: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(host, backend service) for every path of every rule."""
    for rule in ingress["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            yield rule.get("host", "*"), path["backend"]["service"]


def check_ingresses(objects: list[dict[str, Any]]) -> Iterator[Problem]:
    for ingress in _of_kind(objects, "Ingress"):
        namespace = ingress["metadata"].get("namespace")
        tls_hosts = {host for entry in ingress["spec"].get("tls", []) for host in entry.get("hosts", [])}
        for host, backend in _ingress_backends(ingress):
            ports = _service_ports(objects, namespace, backend["name"])
            if ports is None:
                yield Problem(_name(ingress), f"host {host} routes to Service {backend['name']}, which does not exist")
                continue
            wanted = backend.get("port", {})
            if not any(
                ("name" in wanted and port.get("name") == wanted["name"])
                or ("number" in wanted and port["port"] == wanted["number"])
                for port in ports
            ):
                yield Problem(_name(ingress), f"host {host}: Service {backend['name']} has no port {wanted}")
            if tls_hosts and host not in tls_hosts:
                yield Problem(_name(ingress), f"host {host} has no TLS entry")


def _probes(container: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container:
            yield kind, container[kind]


def check_containers(objects: list[dict[str, Any]], facts: dict[str, ServiceFacts]) -> Iterator[Problem]:
    config_maps = {(obj["metadata"].get("namespace"), obj["metadata"]["name"]) for obj in _of_kind(objects, "ConfigMap")}
    claims = {
        (obj["metadata"].get("namespace"), obj["metadata"]["name"])
        for obj in _of_kind(objects, "PersistentVolumeClaim")
    }
    for workload in _workloads(objects):
        namespace = workload["metadata"].get("namespace")
        pod = workload["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume and (namespace, volume["configMap"]["name"]) not in config_maps:
                yield Problem(_name(workload), f"volume {volume['name']}: ConfigMap {volume['configMap']['name']} is not in the manifests")
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and (namespace, claim) not in claims:
                yield Problem(_name(workload), f"volume {volume['name']}: PersistentVolumeClaim {claim} is not in the manifests")
        for container in _containers(workload):
            where = f"{_name(workload)} container {container['name']}"
            image = _image_name(container.get("image", ""))
            service = facts.get(image)
            if service is None:
                yield Problem(where, f"image {image!r} is none of the services' images {sorted(facts)}")
                continue
            ports = container.get("ports", [])
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    yield Problem(where, f"mounts volume {mount['name']!r}, which the pod does not define")
            for kind, probe in _probes(container):
                http = probe.get("httpGet")
                if http is None:
                    continue
                if http.get("path") not in service.get_routes:
                    yield Problem(where, f"{kind} path {http.get('path')!r} is no GET route of {image}")
                if not _port_matches(http.get("port"), ports):
                    yield Problem(where, f"{kind} port {http.get('port')!r} is no container port")
            for variable in container.get("env", []):
                name = variable["name"]
                if name not in service.env and name not in LIBRARY_ENV:
                    yield Problem(where, f"env {name} is no setting of {image} (nor in LIBRARY_ENV)")
                if name == "UVICORN_PORT" and not _port_matches(str(variable.get("value")), ports):
                    yield Problem(where, f"UVICORN_PORT={variable.get('value')} is no container port")


def check_pod_security(objects: list[dict[str, Any]]) -> Iterator[Problem]:
    """What the namespace's Pod Security "restricted" level demands, plus a read-only root filesystem."""
    for workload in _workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        pod_context = pod.get("securityContext", {})
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            yield Problem(_name(workload), "uses the host's namespaces")
        for container in _containers(workload):
            where = f"{_name(workload)} container {container['name']}"
            context = container.get("securityContext", {})
            merged = {**pod_context, **context}
            if merged.get("runAsNonRoot") is not True or merged.get("runAsUser", 1) == 0:
                yield Problem(where, "may run as root (runAsNonRoot: true and a non-zero runAsUser needed)")
            if context.get("readOnlyRootFilesystem") is not True:
                yield Problem(where, "root filesystem is writable (readOnlyRootFilesystem: true needed)")
            if context.get("allowPrivilegeEscalation") is not False:
                yield Problem(where, "allowPrivilegeEscalation is not false")
            if "ALL" not in context.get("capabilities", {}).get("drop", []) or context.get("capabilities", {}).get("add"):
                yield Problem(where, "capabilities: drop ALL and add none")
            if merged.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
                yield Problem(where, "no seccompProfile RuntimeDefault")


def secret_references(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """(where, Secret name, key) for every Secret key the manifests use."""
    for workload in _workloads(objects):
        for container in _containers(workload):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    yield f"{_name(workload)} env {variable['name']}", ref["name"], ref["key"]
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    yield f"{_name(workload)} envFrom", source["secretRef"]["name"], "*"
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"].get("items", [{"key": "*"}]):
                    yield f"{_name(workload)} volume {volume['name']}", volume["secret"]["secretName"], item["key"]
    for ingress in _of_kind(objects, "Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        if "nginx.ingress.kubernetes.io/auth-secret" in annotations:
            # auth-file (the default type): the htpasswd file under the key `auth`.
            yield f"{_name(ingress)} basic auth", annotations["nginx.ingress.kubernetes.io/auth-secret"], "auth"
        for entry in ingress["spec"].get("tls", []):
            for key in ("tls.crt", "tls.key"):
                yield f"{_name(ingress)} tls", entry["secretName"], key
    for monitor in _of_kind(objects, "ServiceMonitor"):
        for endpoint in monitor["spec"].get("endpoints", []):
            credentials = endpoint.get("authorization", {}).get("credentials")
            if credentials:
                yield f"{_name(monitor)} authorization", credentials["name"], credentials["key"]


def check_secrets(objects: list[dict[str, Any]], documented: set[tuple[str, str]]) -> Iterator[Problem]:
    for where, name, key in secret_references(objects):
        if (name, key) not in documented:
            yield Problem(where, f"Secret {name} key {key} is not documented in docs/kubernetes.md")


def check_http_scaled_objects(objects: list[dict[str, Any]]) -> Iterator[Problem]:
    scaled = _of_kind(objects, "HTTPScaledObject")
    interceptor_services = {
        (obj["metadata"].get("namespace"), obj["metadata"]["name"])
        for obj in _of_kind(objects, "Service")
        if obj["spec"].get("type") == "ExternalName" and obj["spec"].get("externalName", "").startswith(INTERCEPTOR_SERVICE + ".")
    }
    routed: set[str] = set()
    for ingress in _of_kind(objects, "Ingress"):
        namespace = ingress["metadata"].get("namespace")
        routed |= {host for host, backend in _ingress_backends(ingress) if (namespace, backend["name"]) in interceptor_services}
    claimed: dict[str, str] = {}
    workloads = _workloads(objects)
    for obj in scaled:
        namespace = obj["metadata"].get("namespace")
        spec = obj["spec"]
        for host in spec.get("hosts", []):
            if host in claimed:
                yield Problem(_name(obj), f"host {host} is claimed by {claimed[host]} too")
            claimed[host] = _name(obj)
            if host not in routed:
                yield Problem(_name(obj), f"host {host} is not an Ingress host routed to the KEDA interceptor")
            idle = proxy_idle_timeouts().get(host)
            if idle is not None and spec.get("scaledownPeriod") != idle:
                yield Problem(_name(obj), f"scaledownPeriod {spec.get('scaledownPeriod')} is not the proxy's idleTimeout ({idle} s) for {host}")
        target = spec["scaleTargetRef"]
        deployment = next(
            (w for w in workloads if w["kind"] == target.get("kind", "Deployment") and w["metadata"]["name"] == target.get("name")
             and w["metadata"].get("namespace") == namespace),
            None,
        )
        if deployment is None:
            yield Problem(_name(obj), f"scaleTargetRef {target.get('kind', 'Deployment')}/{target.get('name')} does not exist")
        service = next(
            (s for s in _of_kind(objects, "Service") if s["metadata"]["name"] == target["service"] and s["metadata"].get("namespace") == namespace),
            None,
        )
        if service is None:
            yield Problem(_name(obj), f"scaleTargetRef service {target['service']} does not exist")
            continue
        if deployment is not None and deployment not in _selected(service, workloads):
            yield Problem(_name(obj), f"Service {target['service']} does not select the pods of {_name(deployment)}")
        if not any(port["port"] == target.get("port") or port.get("name") == target.get("portName") for port in service["spec"]["ports"]):
            yield Problem(_name(obj), f"Service {target['service']} has no port {target.get('port', target.get('portName'))}")
    for host in sorted(routed - set(claimed)):
        yield Problem("Ingress", f"host {host} goes to the KEDA interceptor but no HTTPScaledObject claims it")


@cache
def proxy_idle_timeouts(config: Path = REPO / "autostart" / "config.json") -> dict[str, int]:
    """Host -> idleTimeout of the single-host auto-start proxy, which scaledownPeriod mirrors."""
    services = json.loads(config.read_text())["services"]
    return {host: int(service["idleTimeout"]) for host, service in services.items() if "idleTimeout" in service}


@cache
def _job_statuses() -> frozenset[str]:
    from whisper_common.jobs.records import JobStatus

    return frozenset(status.value for status in JobStatus)


def check_queue_query(query: str, queue: str | None = None) -> str | None:
    """None when the query runs against the jobs store's schema (every migration applied, as a service leaves it),
    returns one count, names real statuses and (given `queue`) counts only that service's queue: one database may
    hold both services' jobs."""
    from whisper_common.db import open_database
    from whisper_common.jobs.schema import JOBS_SCHEMA

    statuses = _job_statuses()
    if queue is not None and re.search(rf"\bqueue\s*=\s*'{re.escape(queue)}'", query) is None:
        return f"must count only queue '{queue}' (AND queue = '{queue}')"
    for equal, listed in re.findall(r"\bstatus\s*(?:=\s*('[^']*')|IN\s*\(([^)]*)\))", query, flags=re.IGNORECASE):
        for value in re.findall(r"'([^']*)'", equal or listed):
            if value not in statuses:
                return f"status {value!r} is no job status ({sorted(statuses)})"
    with tempfile.TemporaryDirectory(prefix="queue-query-") as directory:
        database = open_database(Path(directory) / "jobs.sqlite3", JOBS_SCHEMA, params={"queue": "whisper_faster"})
        try:
            with database.transaction() as tx:
                rows = [tuple(row.values()) for row in tx.execute(query)]
        except sqlite3.Error as exc:
            return f"does not run against the jobs schema: {exc}"
        finally:
            database.close()
    if len(rows) != 1 or len(rows[0]) != 1 or not isinstance(rows[0][0], int):
        return f"must return one integer, returned {rows}"
    return None


def check_scaled_objects(objects: list[dict[str, Any]]) -> Iterator[Problem]:
    workloads = _workloads(objects)
    for obj in _of_kind(objects, "ScaledObject"):
        namespace = obj["metadata"].get("namespace")
        target = obj["spec"]["scaleTargetRef"]
        workload = next(
            (w for w in workloads if w["kind"] == target.get("kind", "Deployment") and w["metadata"]["name"] == target["name"]
             and w["metadata"].get("namespace") == namespace),
            None,
        )
        if workload is None:
            yield Problem(_name(obj), f"scaleTargetRef {target.get('kind', 'Deployment')}/{target['name']} does not exist")
            continue
        containers = {container["name"]: container for container in _containers(workload)}
        container = containers.get(target.get("envSourceContainerName", next(iter(containers))))
        if container is None:
            yield Problem(_name(obj), f"envSourceContainerName {target['envSourceContainerName']} is no container")
            continue
        env_names = {variable["name"] for variable in container.get("env", [])}
        for trigger in obj["spec"]["triggers"]:
            metadata = trigger.get("metadata", {})
            for key, value in metadata.items():
                if key.endswith("FromEnv") and value not in env_names:
                    yield Problem(_name(obj), f"trigger {trigger.get('name', trigger['type'])}: {key} {value} is no env var of container {container['name']}")
            if trigger["type"] == "postgresql" and "query" in metadata:
                error = check_queue_query(metadata["query"], queue=container["name"].replace("-", "_"))
                if error:
                    yield Problem(_name(obj), f"trigger query {error}")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label matchers, grouping labels, ranges and functions left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{?\w+(?::\w+)?\}?", "", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", text)
    return {name for name in names if name.lower() not in PROMQL_WORDS}


def queries(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) from every PrometheusRule and every Grafana dashboard ConfigMap."""
    for rule_object in _of_kind(objects, "PrometheusRule"):
        for group in rule_object["spec"]["groups"]:
            for rule in group["rules"]:
                yield f"{_name(rule_object)} {rule.get('alert') or rule.get('record')}", str(rule["expr"])
    for config_map in _of_kind(objects, "ConfigMap"):
        if config_map["metadata"].get("labels", {}).get("grafana_dashboard") is None:
            continue
        for filename, text in config_map.get("data", {}).items():
            dashboard = json.loads(text)
            for panel in dashboard.get("panels", []):
                for target in panel.get("targets", []):
                    if "expr" in target:
                        yield f"{_name(config_map)} {filename} panel {panel.get('title')!r}", target["expr"]
            for variable in dashboard.get("templating", {}).get("list", []):
                query = variable.get("query")
                query = query.get("query") if isinstance(query, dict) else query
                match = re.match(r"\s*label_values\(\s*([^,]+),", query or "")
                if match:
                    yield f"{_name(config_map)} {filename} variable {variable['name']}", match.group(1)


def check_metrics(objects: list[dict[str, Any]], known: frozenset[str]) -> Iterator[Problem]:
    for where, expr in queries(objects):
        names = promql_metric_names(expr)
        if not names:
            yield Problem(where, f"names no metric: {expr!r}")
        for name in sorted(names - known):
            yield Problem(where, f"metric {name} is exported by none of the services, the proxy or EXTERNAL_METRICS")


def check(
    objects: list[dict[str, Any]],
    facts: dict[str, ServiceFacts] | None = None,
    documented: set[tuple[str, str]] | None = None,
    metrics: frozenset[str] | None = None,
) -> list[Problem]:
    facts = service_facts() if facts is None else facts
    documented = documented_secrets() if documented is None else documented
    metrics = known_metrics() if metrics is None else metrics
    return [
        *check_services(objects),
        *check_ingresses(objects),
        *check_containers(objects, facts),
        *check_pod_security(objects),
        *check_secrets(objects, documented),
        *check_http_scaled_objects(objects),
        *check_scaled_objects(objects),
        *check_volume_sharing(objects),
        *check_metrics(objects, metrics),
        *check_argocd(objects),
    ]


def _max_replicas(objects: list[dict[str, Any]], workload: dict[str, Any]) -> int:
    """The most pods a workload can have: its autoscaler's maximum, else its replicas (1 when unset)."""
    name, namespace = workload["metadata"]["name"], workload["metadata"].get("namespace")
    for scaler in _of_kind(objects, "HTTPScaledObject"):
        target = scaler["spec"]["scaleTargetRef"]
        if target.get("name") == name and scaler["metadata"].get("namespace") == namespace:
            return int(scaler["spec"].get("replicas", {}).get("max", 100))
    for scaler in _of_kind(objects, "ScaledObject"):
        target = scaler["spec"]["scaleTargetRef"]
        if target["name"] == name and scaler["metadata"].get("namespace") == namespace:
            return int(scaler["spec"].get("maxReplicaCount", 100))
    return int(workload["spec"].get("replicas", 1))


def check_volume_sharing(objects: list[dict[str, Any]]) -> Iterator[Problem]:
    """A volume that several pods may mount at once must be ReadWriteMany; a DATA_DIR several pods share must hold
    no SQLite jobs queue or live sessions (JOBS_DATABASE_URL set in each of them, which moves both to PostgreSQL)."""
    claims = {
        (obj["metadata"].get("namespace"), obj["metadata"]["name"]): obj for obj in _of_kind(objects, "PersistentVolumeClaim")
    }
    pods_per_claim: dict[tuple[str | None, str], int] = {}
    data_dir_users: dict[tuple[str | None, str], list[tuple[str, bool]]] = {}
    for workload in _workloads(objects):
        namespace = workload["metadata"].get("namespace")
        pods = _max_replicas(objects, workload)
        volumes = {
            volume["name"]: volume["persistentVolumeClaim"]["claimName"]
            for volume in workload["spec"]["template"]["spec"].get("volumes", [])
            if "persistentVolumeClaim" in volume
        }
        for claim in set(volumes.values()):
            pods_per_claim[(namespace, claim)] = pods_per_claim.get((namespace, claim), 0) + pods
        for container in _containers(workload):
            variables = {variable["name"]: variable for variable in container.get("env", [])}
            data_dir = variables.get("DATA_DIR", {}).get("value")
            for mount in container.get("volumeMounts", []):
                if mount["mountPath"] == data_dir and mount["name"] in volumes:
                    users = data_dir_users.setdefault((namespace, volumes[mount["name"]]), [])
                    users.extend([(_name(workload), "JOBS_DATABASE_URL" in variables)] * pods)
    for key, pods in sorted(pods_per_claim.items(), key=str):
        modes = set(claims[key]["spec"].get("accessModes", [])) if key in claims else set()
        if pods > 1 and "ReadWriteMany" not in modes:
            yield Problem(f"PersistentVolumeClaim/{key[1]}", f"up to {pods} pods mount it, but its access modes are {sorted(modes)}")
    for key, users in sorted(data_dir_users.items(), key=str):
        if len(users) > 1 and not all(has_database for _, has_database in users):
            workloads = sorted({name for name, has_database in users if not has_database})
            yield Problem(
                f"PersistentVolumeClaim/{key[1]}",
                f"DATA_DIR of up to {len(users)} pods, and {', '.join(workloads)} would keep the jobs and live sessions "
                "in SQLite files there (set JOBS_DATABASE_URL)",
            )


def _expand(template: Any, element: dict[str, Any]) -> Any:
    """An ApplicationSet template with `{{.key}}` (goTemplate) filled from one list element."""
    if isinstance(template, str):
        return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda match: str(element[match.group(1)]), template)
    if isinstance(template, dict):
        return {key: _expand(value, element) for key, value in template.items()}
    if isinstance(template, list):
        return [_expand(value, element) for value in template]
    return template


def argocd_applications(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, Application spec): the Applications, and those each ApplicationSet's list generators make."""
    for application in _of_kind(objects, "Application"):
        yield _name(application), application["spec"]
    for application_set in _of_kind(objects, "ApplicationSet"):
        for generator in application_set["spec"]["generators"]:
            for element in generator.get("list", {}).get("elements", []):
                made = _expand(application_set["spec"]["template"], element)
                yield f"{_name(application_set)} -> {made['metadata']['name']}", made["spec"]


def check_argocd(objects: list[dict[str, Any]], repo: Path = REPO) -> Iterator[Problem]:
    for where, spec in argocd_applications(objects):
        for source in spec.get("sources", [spec.get("source")]):
            if source and source.get("path") and not (repo / source["path"] / "kustomization.yaml").is_file():
                yield Problem(where, f"source path {source['path']} is no kustomization in this repository")
