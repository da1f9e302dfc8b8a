from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.wiring import KUSTOMIZE_ROOT, render

OVERLAYS = ("base", "overlays/scale-to-zero", "overlays/gpu", "monitoring")


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each kustomization rendered once by the real `kubectl kustomize`."""
    return {overlay: render(KUSTOMIZE_ROOT / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def argocd() -> list[dict[str, Any]]:
    """The Argo CD objects (alternatives, applied with -f, so not a kustomization)."""
    return [
        document
        for path in sorted((KUSTOMIZE_ROOT / "argocd").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
