"""A self-signed certificate for the local hostnames, made with openssl once and reused while it fits."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

VALID_DAYS = 825


class CertificateError(RuntimeError):
    """openssl could not make or read the certificate."""


def ensure_self_signed(cert: Path, key: Path, hostnames: Sequence[str]) -> bool:
    """Makes cert/key unless the existing pair covers the hostnames for another day; True when it made them."""
    if cert.is_file() and key.is_file() and _covers(cert, hostnames) and _valid_for_a_day(cert):
        return False
    cert.parent.mkdir(parents=True, exist_ok=True)
    sans = ",".join([*(f"DNS:{name}" for name in hostnames), "IP:127.0.0.1", "IP:::1"])
    # Self-signed and its own trust anchor: a CA certificate with key usage, so strict verifiers accept it too.
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", str(VALID_DAYS),
        "-subj", f"/O=Whisper platform (local)/CN={hostnames[0]}",
        "-addext", f"subjectAltName={sans}",
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip
    key.chmod(0o600)
    return True


def _covers(cert: Path, hostnames: Sequence[str]) -> bool:
    text = _openssl("x509", "-in", str(cert), "-noout", "-ext", "subjectAltName", check=False)
    return all(f"DNS:{name}" in text for name in hostnames)


def _valid_for_a_day(cert: Path) -> bool:
    result = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-checkend", "86400"], capture_output=True, check=False
    )
    return result.returncode == 0


def _openssl(*args: str, check: bool = True, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, input=stdin, check=False)
    except FileNotFoundError as exc:
        raise CertificateError("openssl is not installed (apt-get install openssl)") from exc
    if check and result.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {result.stderr.strip()}")
    return result.stdout
