"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the scheme Argilla signs
with and our outbound webhooks use.

Headers `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`
("v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>", several space-separated during a key
rotation). Secrets are "whsec_<base64 key>".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class BadSignature(Exception):
    """Why a request's signature was refused (no secret or body in the message)."""


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> None:
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    given = headers.get("webhook-signature")
    if not msg_id or not stamp or not given:
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(stamp)
    except ValueError:
        raise BadSignature("webhook-timestamp is not an integer") from None
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        raise BadSignature(f"webhook-timestamp is more than {tolerance_s:g} s from now (stale)")
    expected = sign(secret, msg_id, ts, body).encode()
    for candidate in given.split():
        if hmac.compare_digest(candidate.encode(), expected):
            return
    raise BadSignature("webhook-signature does not match")
