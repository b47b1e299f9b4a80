"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the scheme Argilla signs
with and our outbound webhooks use, through the spec's own `standardwebhooks` package.

Headers `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`
("v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>", several space-separated during a key
rotation). Secrets are "whsec_<base64 key>".

The package (1.1.0) verifies the HMAC, the several-signature header and a fixed 5-minute window.
Around it: the timestamp must be integer seconds (the spec's form; the package's float() took
"1e9" and a 401-digit number reached an OverflowError in our old code), a connector may narrow the
window, and the package's other exceptions (a signature without a comma, bad base64, a body that
is not UTF-8) are a refusal, not a 500.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import secrets
import time

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError

from app.errors import Unauthorized

PREFIX = "whsec_"
# The package's window; a connector's tolerance can only narrow it.
MAX_TOLERANCE_S = 300
MAX_ID_CHARS = 256  # message ids are remembered (app/connectors/replay.py)


class BadSignature(Unauthorized):
    """Why a request's signature was refused (no secret or body in the message): a 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Webhook refused: {reason}.")
        self.reason = reason


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _webhook(secret: str) -> Webhook:
    try:
        return Webhook(secret)
    except (binascii.Error, ValueError, EmptyWebhookSecretError) as exc:
        raise BadSignature("no usable signing secret") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    when = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return _webhook(secret).sign(msg_id, when, body.decode())


def timestamp_of(headers: dict[str, str], tolerance_s: float, now: float | None = None) -> int:
    """The `webhook-timestamp`, refused unless unix seconds within `tolerance_s` of now."""
    stamp = headers.get("webhook-timestamp") or ""
    if not (0 < len(stamp) <= 12 and stamp.isascii() and stamp.isdigit()):
        raise BadSignature("webhook-timestamp is not unix seconds")
    ts = int(stamp)
    if abs((time.time() if now is None else now) - ts) > min(tolerance_s, MAX_TOLERANCE_S):
        raise BadSignature(
            f"webhook-timestamp is more than {min(tolerance_s, MAX_TOLERANCE_S):g} s "
            "from now (stale)"
        )
    return ts


def check_headers(headers: dict[str, str], tolerance_s: float = MAX_TOLERANCE_S) -> None:
    """What can be refused before the body is read: missing headers, a stale timestamp."""
    if not all(headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")):
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(headers["webhook-id"]) > MAX_ID_CHARS:
        raise BadSignature(f"webhook-id is over {MAX_ID_CHARS} characters")
    timestamp_of(headers, tolerance_s)


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    tolerance_s: float = MAX_TOLERANCE_S,
) -> None:
    """Refuse unless one of the signatures verifies. The message for a signature that does not
    verify is the same whatever the secret (none, another); a connector's narrower tolerance is
    checked after the signature, so only its holder learns of it."""
    check_headers(headers)
    wanted = {h: headers[h] for h in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    try:
        _webhook(secret).verify(body, wanted, json_parse=False)
    except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError):
        raise BadSignature("the signature does not verify for this URL") from None
    except BadSignature:
        raise BadSignature("the signature does not verify for this URL") from None
    timestamp_of(headers, tolerance_s)
