"""Inbound webhook signatures: sans-I/O verification and signing over raw body bytes.

Three schemes, chosen per source:

``standard-webhooks`` (default)
    ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
    (space-separated ``v1,<base64 HMAC-SHA256>`` entries) over ``{id}.{timestamp}.{body}``;
    secrets are ``whsec_<base64>``.
``hmac-sha256``
    GitHub style: ``<header>: sha256=<hex HMAC-SHA256(secret, body)>``. There is no
    timestamp, so replay protection rests on the delivery id (or body hash) alone.
``slack-v0``
    ``X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:" + ts + ":" + body)>`` with
    ``X-Slack-Request-Timestamp``.

Why not the ``standardwebhooks`` package for verification: it raises on the first
malformed entry of the signature list (hiding a later valid one), raises
``UnicodeDecodeError`` on a non-UTF-8 body, and hard-codes a ±5 min tolerance with the
real clock. :class:`Verifier` checks every entry, rejects non-UTF-8 bodies with a
:class:`~argbridge.errors.SignatureError`, takes the tolerance from config and ``now``
from the caller. All comparisons use :func:`hmac.compare_digest`; every configured
secret is tried (key rotation). Errors carry a short machine ``reason`` for logs and
metrics; the HTTP layer never shows it to the caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from argbridge.errors import SignatureError

Scheme = Literal["standard-webhooks", "hmac-sha256", "slack-v0"]
SCHEMES: tuple[Scheme, ...] = ("standard-webhooks", "hmac-sha256", "slack-v0")
WHSEC_PREFIX = "whsec_"
SLACK_SIGNATURE = "x-slack-signature"
SLACK_TIMESTAMP = "x-slack-request-timestamp"
STANDARD_ID = "webhook-id"
STANDARD_TIMESTAMP = "webhook-timestamp"
STANDARD_SIGNATURE = "webhook-signature"


class VerificationFailed(SignatureError):
    """A signature did not verify; ``reason`` is for logs and metrics only."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"webhook signature rejected ({reason})")


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified request tells us: its delivery id (when the scheme has one)."""

    delivery_id: str | None
    timestamp: int | None


def decode_secret(scheme: Scheme, secret: str) -> bytes:
    """The HMAC key of ``secret`` for ``scheme``; raises ``ValueError`` (never echoing it).

    Standard Webhooks keys are base64 (``whsec_`` prefix optional, padding optional),
    like the ``standardwebhooks`` package reads them; the other schemes use the text.
    """
    if not secret:
        raise ValueError("the secret is empty")
    if scheme != "standard-webhooks":
        return secret.encode("utf-8")
    raw = secret.removeprefix(WHSEC_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a standard-webhooks secret must be base64 (whsec_...)") from None
    if not key:
        raise ValueError("the secret is empty")
    return key


def _header_bytes(value: str) -> bytes:
    # ASGI servers decode header bytes as latin-1; re-encoding gives the wire bytes back.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _mac(key: bytes, *parts: bytes) -> bytes:
    # One-shot hmac.digest is the C fast path (~1.5x quicker than hmac.new + update).
    return hmac.digest(key, b"".join(parts), "sha256")


class HmacKey:
    """HMAC-SHA256 of one key, with the keyed state computed once (the stdlib's
    ``hmac.new`` + ``copy()``): per request only the state is copied — 1.8 µs for a 1 KiB
    body instead of 2.3 µs for :func:`hmac.digest`, which derives both pads every call.
    """

    __slots__ = ("_base",)

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod="sha256")

    def __repr__(self) -> str:
        return "HmacKey(<hidden>)"

    def digest(self, *parts: bytes) -> bytes:
        mac = self._base.copy()
        for part in parts:
            mac.update(part)
        return mac.digest()


def _any_match(candidates: Iterable[bytes], expected: Sequence[bytes]) -> bool:
    found = False
    for given in candidates:
        for want in expected:
            # No early exit inside the secrets loop: timing says nothing about which key.
            found |= hmac.compare_digest(given, want)
    return found


def _parse_timestamp(value: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise VerificationFailed("bad_timestamp")
    return int(text)


class Verifier:
    """Verifies one source's requests; built once from config, used per request."""

    __slots__ = ("_keys", "_macs", "id_header", "scheme", "signature_header", "tolerance")

    def __init__(
        self,
        scheme: Scheme,
        secrets: Sequence[str],
        *,
        tolerance: float = 300.0,
        signature_header: str = "X-Hub-Signature-256",
        id_header: str | None = None,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown signature scheme {scheme!r}")
        if not secrets:
            raise ValueError("at least one secret is needed")
        self.scheme: Scheme = scheme
        self._keys = tuple(decode_secret(scheme, s) for s in secrets)
        self._macs = tuple(HmacKey(key) for key in self._keys)
        self.tolerance = tolerance
        self.signature_header = signature_header.lower()
        self.id_header = id_header.lower() if id_header else None

    def __repr__(self) -> str:
        return f"Verifier(scheme={self.scheme!r}, secrets=<{len(self._keys)} hidden>)"

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        """Check ``body`` against the signature headers (lower-case names) at ``now``.

        Returns the delivery id on success (``webhook-id`` for standard-webhooks, which is
        signed; the configured id header for the other schemes, which is *not* signed, or
        ``None``); raises :class:`VerificationFailed` otherwise.
        """
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationFailed("non_utf8_body") from None
        if self.scheme == "standard-webhooks":
            return self._standard(headers, body, now)
        if self.scheme == "hmac-sha256":
            return self._hmac(headers, body)
        return self._slack(headers, body, now)

    def _check_time(self, ts: int, now: float) -> None:
        if now - ts > self.tolerance:
            raise VerificationFailed("stale_timestamp")
        if ts - now > self.tolerance:
            raise VerificationFailed("future_timestamp")

    def _delivery_id(self, headers: Mapping[str, str]) -> str | None:
        if self.id_header is None:
            return None
        value = headers.get(self.id_header, "").strip()
        return value or None

    def _standard(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        msg_id = headers.get(STANDARD_ID)
        ts_text = headers.get(STANDARD_TIMESTAMP)
        sig = headers.get(STANDARD_SIGNATURE)
        if not msg_id or not ts_text or not sig:
            raise VerificationFailed("missing_headers")
        ts = _parse_timestamp(ts_text)
        self._check_time(ts, now)
        prefix = _header_bytes(msg_id) + b"." + ts_text.strip().encode("ascii") + b"."
        expected = [mac.digest(prefix, body) for mac in self._macs]
        if not _any_match(_standard_entries(sig), expected):
            raise VerificationFailed("mismatch")
        # The signed webhook-id is the delivery id; an unsigned id header never overrides it.
        return Verified(msg_id, ts)

    def _hmac(self, headers: Mapping[str, str], body: bytes) -> Verified:
        sig = headers.get(self.signature_header)
        if not sig:
            raise VerificationFailed("missing_headers")
        expected = [mac.digest(body) for mac in self._macs]
        if not _any_match(_hex_entries(sig, "sha256="), expected):
            raise VerificationFailed("mismatch")
        return Verified(self._delivery_id(headers), None)

    def _slack(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        sig = headers.get(SLACK_SIGNATURE)
        ts_text = headers.get(SLACK_TIMESTAMP)
        if not sig or not ts_text:
            raise VerificationFailed("missing_headers")
        ts = _parse_timestamp(ts_text)
        self._check_time(ts, now)
        base = b"v0:" + ts_text.strip().encode("ascii") + b":"
        expected = [mac.digest(base, body) for mac in self._macs]
        if not _any_match(_hex_entries(sig, "v0="), expected):
            raise VerificationFailed("mismatch")
        return Verified(self._delivery_id(headers), ts)


def _standard_entries(header: str) -> list[bytes]:
    """Decoded ``v1`` signatures; malformed or other-version entries are skipped."""
    out: list[bytes] = []
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep or version != "v1" or not value:
            continue
        try:
            out.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return out


def _hex_entries(header: str, prefix: str) -> list[bytes]:
    """Decoded ``<prefix><hex>`` signatures (several may be separated by spaces/commas)."""
    out: list[bytes] = []
    for entry in header.replace(",", " ").split():
        if not entry.startswith(prefix):
            continue
        try:
            out.append(bytes.fromhex(entry[len(prefix) :]))
        except ValueError:
            continue
    return out


def body_hash(body: bytes) -> str:
    """The replay key of a request without a delivery id."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


# -- signing (tests, benchmark, ``argbridge sign``) -------------------------------------


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` for ``{msg_id}.{timestamp}.{body}``."""
    key = decode_secret("standard-webhooks", secret)
    mac = _mac(key, f"{msg_id}.{timestamp}.".encode(), body)
    return "v1," + base64.b64encode(mac).decode("ascii")


def sign_hmac_sha256(secret: str, body: bytes) -> str:
    """``sha256=<hex>`` as GitHub sends it."""
    return "sha256=" + _mac(secret.encode("utf-8"), body).hex()


def sign_slack(secret: str, timestamp: int, body: bytes) -> str:
    """``v0=<hex>`` as Slack sends it."""
    return "v0=" + _mac(secret.encode("utf-8"), f"v0:{timestamp}:".encode(), body).hex()


def signed_headers(
    scheme: Scheme,
    secrets: Sequence[str],
    body: bytes,
    *,
    now: float,
    msg_id: str,
    signature_header: str = "X-Hub-Signature-256",
) -> dict[str, str]:
    """Every header a sender of ``scheme`` would add, signed with each of ``secrets``."""
    ts = int(now)
    if scheme == "standard-webhooks":
        sigs = " ".join(sign_standard(s, msg_id, ts, body) for s in secrets)
        return {STANDARD_ID: msg_id, STANDARD_TIMESTAMP: str(ts), STANDARD_SIGNATURE: sigs}
    if scheme == "hmac-sha256":
        return {signature_header: ", ".join(sign_hmac_sha256(s, body) for s in secrets)}
    if scheme == "slack-v0":
        sigs = " ".join(sign_slack(s, ts, body) for s in secrets)
        return {SLACK_SIGNATURE: sigs, SLACK_TIMESTAMP: str(ts)}
    raise ValueError(f"unknown signature scheme {scheme!r}")
