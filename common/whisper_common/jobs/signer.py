"""Standard Webhooks signatures (https://www.standardwebhooks.com/): `webhook-signature` is `v1,` + base64 of
HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the base64 bytes after `whsec_`; with several
secrets (rotation) one signature per secret, separated by spaces."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    text = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


class Signer:
    def __init__(self, secrets: Sequence[str]) -> None:
        self._keys = [secret_key(secret) for secret in secrets]

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
        if self._keys:
            signed = f"{message_id}.{timestamp}.".encode() + body
            headers["webhook-signature"] = " ".join(
                "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
                for key in self._keys
            )
        return headers
