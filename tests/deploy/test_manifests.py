"""Every kustomization under deploy/kubernetes renders with `kubectl kustomize` and every object it makes is valid:
built-in kinds by `kubernetes-validate --strict` (Kubernetes 1.37 schemas), the custom resources by the JSON Schemas
in tests/deploy/schemas (written from each project's documented fields, unknown fields rejected). No cluster: the
Kubernetes API is what cannot exist here, so this is the offline part of the validation (docs/kubernetes.md)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import OVERLAYS
from tests.deploy.wiring import KUSTOMIZE_ROOT

KUBERNETES_VERSION = "1.37.0"
SCHEMAS = Path(__file__).with_name("schemas")
CUSTOM_KINDS = {
    ("http.keda.sh/v1alpha1", "HTTPScaledObject"): "httpscaledobject.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("argoproj.io/v1alpha1", "Application"): "application.json",
    ("argoproj.io/v1alpha1", "ApplicationSet"): "applicationset.json",
}


def custom_schema_errors(obj: dict[str, Any]) -> list[str]:
    schema = json.loads((SCHEMAS / CUSTOM_KINDS[(obj["apiVersion"], obj["kind"])]).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(obj)]


def is_built_in(obj: dict[str, Any]) -> bool:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        return True
    return True


def validate_cli(objects: list[dict[str, Any]], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump_all(objects))
    return subprocess.run(
        [str(Path(sys.executable).with_name("kubernetes-validate")), "--strict",
         "--quiet", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_and_every_object_validates(overlay: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    objects = rendered[overlay]
    assert objects, f"{overlay} rendered nothing"
    built_in = [obj for obj in objects if is_built_in(obj)]
    custom = [obj for obj in objects if not is_built_in(obj)]
    unknown = [f"{obj['apiVersion']} {obj['kind']}" for obj in custom if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS]
    assert not unknown, f"kinds with neither a Kubernetes nor a hand-written schema: {unknown}"

    result = validate_cli(built_in, tmp_path / "built-in.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    problems = {f"{obj['kind']}/{obj['metadata']['name']}": custom_schema_errors(obj) for obj in custom}
    assert not {name: errors for name, errors in problems.items() if errors}


def test_argocd_objects_validate(argocd: list[dict[str, Any]]) -> None:
    assert {obj["kind"] for obj in argocd} == {"Application", "ApplicationSet"}
    for obj in argocd:
        assert custom_schema_errors(obj) == [], obj["metadata"]["name"]


def test_kubernetes_validate_rejects_an_unknown_field(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    deployment = copy.deepcopy(next(obj for obj in rendered["base"] if obj["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    result = validate_cli([deployment], tmp_path / "broken.yaml")
    assert result.returncode != 0
    assert "readinessProbes" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("kind", "breakage", "expected"),
    [
        ("HTTPScaledObject", lambda o: o["spec"].update(scaleDownPeriod=900), "scaleDownPeriod"),
        ("HTTPScaledObject", lambda o: o["spec"]["scaleTargetRef"].pop("port"), "is not valid under any"),
        ("ScaledObject", lambda o: o["spec"]["triggers"][0]["metadata"].update(targetQueryValue=2), "is not of type 'string'"),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(bearerToken="x"), "bearerToken"),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(severity="x"), "severity"),
    ],
    ids=["unknown-field", "port-missing", "metadata-not-string", "servicemonitor-field", "rule-field"],
)
def test_custom_schemas_reject_what_the_operators_would(
    rendered: dict[str, list[dict[str, Any]]], kind: str, breakage: Any, expected: str
) -> None:
    everything = rendered["overlays/gpu"] + rendered["monitoring"]
    obj = copy.deepcopy(next(o for o in everything if o["kind"] == kind))
    assert custom_schema_errors(obj) == []
    breakage(obj)
    errors = custom_schema_errors(obj)
    assert any(expected in error for error in errors), errors


def test_every_kustomization_is_rendered_by_the_tests() -> None:
    found = {str(path.parent.relative_to(KUSTOMIZE_ROOT)) for path in KUSTOMIZE_ROOT.rglob("kustomization.yaml")}
    assert found == set(OVERLAYS)
