"""Standard Webhooks signatures (https://www.standardwebhooks.com): the secret is `whsec_`
followed by the base64 of the key; a message is signed as HMAC-SHA256 over
`{webhook-id}.{webhook-timestamp}.{body}`, sent as `webhook-signature: v1,<base64>`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from telemetry.errors import UsageError

PREFIX = "whsec_"


def parse_secret(text: str, source: str) -> bytes:
    """The key of a `whsec_<base64>` secret; anything else is a usage error naming its source."""
    value = text.strip()
    if not value.startswith(PREFIX):
        raise UsageError(f"{source}: the webhook secret must look like whsec_<base64> (Standard Webhooks)")
    try:
        key = base64.b64decode(value[len(PREFIX):], validate=True)
    except binascii.Error:
        raise UsageError(f"{source}: the part after whsec_ is not base64") from None
    if len(key) < 24:
        raise UsageError(f"{source}: the webhook key is {len(key)} bytes; use at least 24 (32 recommended)")
    return key


def signature(key: bytes, message_id: str, timestamp_s: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, message_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The three headers of a signed message; the timestamp is the attempt's, the id the message's."""
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp_s),
            "webhook-signature": signature(key, message_id, timestamp_s, body)}
