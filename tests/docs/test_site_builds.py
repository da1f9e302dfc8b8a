"""The guide builds with `mkdocs build --strict`: a broken link or anchor, a missing page or an embedded file
(`--8<--`) that no longer exists fails here as it fails `make docs` and CI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_strict_build(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "configuration/index.html", "api/index.html", "benchmarks/index.html"):
        assert (tmp_path / "site" / page).is_file(), f"{page} was not built"
    built_deployment = (tmp_path / "site" / "deployment" / "index.html").read_text()
    assert "--8&lt;--" not in built_deployment, "a snippet was not embedded"
