"""Sans-I/O signature verification on byte literals (no server)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk.signature import Clock as SlackClock
from standardwebhooks import Webhook

from argbridge.errors import SignatureError
from argbridge.signing import (
    HmacKey,
    VerificationFailed,
    Verifier,
    body_hash,
    decode_secret,
    sign_hmac_sha256,
    sign_slack,
    sign_standard,
    signed_headers,
)

NOW = 1_763_900_000
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()
BODY = b'{"event":"incident.created","incident":{"id":"INC-1","severity":"P1"}}'


def package_headers(secret: str, msg_id: str, ts: int, body: bytes) -> dict[str, str]:
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def reason(verifier: Verifier, headers: dict[str, str], body: bytes, now: float = NOW) -> str:
    with pytest.raises(VerificationFailed) as info:
        verifier.verify(headers, body, now)
    return info.value.reason


# -- standard-webhooks ----------------------------------------------------------------


def test_standard_accepts_package_signature():
    v = Verifier("standard-webhooks", [SECRET])
    result = v.verify(package_headers(SECRET, "msg_1", NOW, BODY), BODY, NOW)
    assert result.delivery_id == "msg_1"
    assert result.timestamp == NOW


def test_our_signer_matches_the_package():
    ours = sign_standard(SECRET, "msg_1", NOW, BODY)
    assert ours == package_headers(SECRET, "msg_1", NOW, BODY)["webhook-signature"]


def test_standard_wrong_secret_and_tampered_body():
    v = Verifier("standard-webhooks", [SECRET])
    headers = package_headers(OLD_SECRET, "msg_1", NOW, BODY)
    assert reason(v, headers, BODY) == "mismatch"
    good = package_headers(SECRET, "msg_1", NOW, BODY)
    assert reason(v, good, BODY.replace(b"P1", b"P2")) == "mismatch"
    # The id and the timestamp are signed too.
    assert reason(v, {**good, "webhook-id": "msg_2"}, BODY) == "mismatch"
    assert reason(v, {**good, "webhook-timestamp": str(NOW + 1)}, BODY) == "mismatch"


def test_rotation_any_secret_matches():
    v = Verifier("standard-webhooks", [OLD_SECRET, SECRET])
    v.verify(package_headers(SECRET, "m", NOW, BODY), BODY, NOW)
    v.verify(package_headers(OLD_SECRET, "m", NOW, BODY), BODY, NOW)
    # A sender signing with both keys during rotation.
    both = signed_headers("standard-webhooks", [OLD_SECRET, SECRET], BODY, now=NOW, msg_id="m")
    assert len(both["webhook-signature"].split()) == 2
    Verifier("standard-webhooks", [SECRET]).verify(both, BODY, NOW)


@pytest.mark.parametrize(
    "junk",
    ["v1,!!!notbase64", "v1,", "garbage", "v1a,AAAA", "v2,abcd", ",", "v1,YQ", "v1,=="],
)
def test_malformed_entry_does_not_hide_a_later_valid_one(junk):
    v = Verifier("standard-webhooks", [SECRET])
    headers = package_headers(SECRET, "msg_1", NOW, BODY)
    headers["webhook-signature"] = f"{junk} {headers['webhook-signature']}"
    assert v.verify(headers, BODY, NOW).delivery_id == "msg_1"
    # ... and the package itself does raise on some of them (why we do not use it).
    headers_only_junk = {**headers, "webhook-signature": junk}
    assert reason(v, headers_only_junk, BODY) == "mismatch"


def test_package_raises_on_malformed_entry_we_do_not():
    headers = package_headers(SECRET, "msg_1", NOW, BODY)
    headers["webhook-signature"] = "v1,!!! " + headers["webhook-signature"]
    with pytest.raises(Exception) as info:
        Webhook(SECRET).verify(
            BODY, {**headers, "webhook-timestamp": str(int(datetime.now(UTC).timestamp()))}
        )
    assert not isinstance(info.value, SignatureError)


@pytest.mark.parametrize(("delta", "why"), [(-301, "stale_timestamp"), (301, "future_timestamp")])
def test_timestamp_tolerance(delta, why):
    v = Verifier("standard-webhooks", [SECRET], tolerance=300)
    ts = NOW + delta
    assert reason(v, package_headers(SECRET, "m", ts, BODY), BODY) == why
    # Exactly at the edge is fine.
    edge = NOW + (300 if delta > 0 else -300)
    v.verify(package_headers(SECRET, "m", edge, BODY), BODY, NOW)


def test_tolerance_is_configurable():
    v = Verifier("standard-webhooks", [SECRET], tolerance=3600)
    v.verify(package_headers(SECRET, "m", NOW - 3000, BODY), BODY, NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers(missing):
    v = Verifier("standard-webhooks", [SECRET])
    headers = package_headers(SECRET, "m", NOW, BODY)
    del headers[missing]
    assert reason(v, headers, BODY) == "missing_headers"


@pytest.mark.parametrize("ts", ["abc", "-5", "1.5", "", "١٢٣", "9" * 20])
def test_bad_timestamp(ts):
    v = Verifier("standard-webhooks", [SECRET])
    headers = package_headers(SECRET, "m", NOW, BODY)
    headers["webhook-timestamp"] = ts
    assert reason(v, headers, BODY) in ("bad_timestamp", "missing_headers")


def test_non_utf8_body_rejected():
    v = Verifier("standard-webhooks", [SECRET])
    body = b'{"x":"\xff\xfe"}'
    key = decode_secret("standard-webhooks", SECRET)
    mac = hmac.new(key, b"m." + str(NOW).encode() + b"." + body, hashlib.sha256).digest()
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(NOW),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }
    assert reason(v, headers, body) == "non_utf8_body"


def test_unsigned_id_header_never_overrides_the_signed_webhook_id():
    v = Verifier("standard-webhooks", [SECRET], id_header="X-Delivery")
    headers = {**package_headers(SECRET, "m", NOW, BODY), "x-delivery": "d-9"}
    assert v.verify(headers, BODY, NOW).delivery_id == "m"


def test_secret_without_prefix_and_padding():
    raw = base64.b64encode(b"z" * 24).decode().rstrip("=")
    v = Verifier("standard-webhooks", [raw])
    v.verify(package_headers("whsec_" + raw, "m", NOW, BODY), BODY, NOW)


@pytest.mark.parametrize("bad", ["", "whsec_", "whsec_!!!!", "not base64 at all"])
def test_unusable_secret_is_a_value_error_without_the_secret(bad):
    with pytest.raises(ValueError) as info:
        Verifier("standard-webhooks", [bad])
    if bad:
        assert bad not in str(info.value)


def test_repr_hides_secrets():
    v = Verifier("hmac-sha256", ["supersecret"])
    assert "supersecret" not in repr(v)


# -- hmac-sha256 (GitHub) -------------------------------------------------------------


def test_hmac_sha256_hand_computed():
    digest = hmac.new(b"gh-secret", BODY, hashlib.sha256).hexdigest()
    v = Verifier("hmac-sha256", ["gh-secret"], id_header="X-GitHub-Delivery")
    headers = {"x-hub-signature-256": f"sha256={digest}", "x-github-delivery": "guid-1"}
    assert v.verify(headers, BODY, NOW).delivery_id == "guid-1"
    assert sign_hmac_sha256("gh-secret", BODY) == f"sha256={digest}"
    assert reason(v, headers, BODY + b" ") == "mismatch"
    assert reason(v, {"x-hub-signature-256": digest}, BODY) == "mismatch"  # no prefix
    assert reason(v, {}, BODY) == "missing_headers"
    # No timestamp in this scheme: "now" does not matter.
    v.verify(headers, BODY, NOW + 10**6)


def test_hmac_configurable_header_and_rotation():
    v = Verifier("hmac-sha256", ["old", "new"], signature_header="X-Signature")
    headers = {"x-signature": "sha256=zz, " + sign_hmac_sha256("new", BODY)}
    assert v.verify(headers, BODY, NOW).delivery_id is None


# -- slack v0 ---------------------------------------------------------------------------


def test_slack_v0_against_slack_sdk():
    from slack_sdk.signature import SignatureVerifier

    sig = sign_slack("slack-secret", NOW, BODY)
    headers = {"x-slack-signature": sig, "x-slack-request-timestamp": str(NOW)}
    sdk = SignatureVerifier("slack-secret", clock=_FixedClock(NOW))
    assert sdk.is_valid_request(BODY, headers)
    v = Verifier("slack-v0", ["slack-secret"])
    assert v.verify(headers, BODY, NOW).timestamp == NOW
    assert reason(v, headers, BODY, now=NOW + 301) == "stale_timestamp"
    assert reason(v, {**headers, "x-slack-signature": "v0=00"}, BODY) == "mismatch"
    assert reason(v, {"x-slack-signature": sig}, BODY) == "missing_headers"


class _FixedClock(SlackClock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_body_hash_is_stable():
    assert body_hash(b"abc") == body_hash(b"abc") != body_hash(b"abd")
    assert body_hash(b"abc").startswith("sha256:")


# -- properties -----------------------------------------------------------------------


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "x-slack-signature",
                "x-slack-request-timestamp",
                "x-hub-signature-256",
                "other",
            ]
        ),
        st.text(max_size=80),
    ),
    st.binary(max_size=200),
    st.sampled_from(["standard-webhooks", "hmac-sha256", "slack-v0"]),
)
def test_garbage_only_ever_raises_signature_error(headers, body, scheme):
    secret = SECRET if scheme == "standard-webhooks" else "s3cret"
    v = Verifier(scheme, [secret])
    try:
        v.verify(headers, body, NOW)
    except SignatureError:
        pass


@given(st.binary(max_size=300), st.text(min_size=1, max_size=30).filter(lambda s: "." not in s))
def test_roundtrip_any_body(body, msg_id):
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return
    headers = signed_headers("standard-webhooks", [SECRET], body, now=NOW, msg_id=msg_id)
    # Headers travel as latin-1 in ASGI: simulate the server's decoding.
    wire = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
    assert Verifier("standard-webhooks", [SECRET]).verify(wire, body, NOW).timestamp == NOW


@given(st.binary(min_size=1, max_size=200), st.lists(st.binary(max_size=300), max_size=4))
def test_precomputed_hmac_key_is_exactly_hmac_sha256(key, parts):
    # Keys shorter than, equal to and longer than the 64-byte block (hashed first).
    assert HmacKey(key).digest(*parts) == hmac.digest(key, b"".join(parts), "sha256")


@pytest.mark.parametrize("length", [1, 63, 64, 65, 200])
def test_hmac_sha256_any_secret_length_hand_computed(length):
    secret = "s" * length
    mac = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    v = Verifier("hmac-sha256", [secret])
    v.verify({"x-hub-signature-256": f"sha256={mac}"}, BODY, NOW)
    bad = mac[:-1] + ("1" if mac.endswith("0") else "0")
    assert reason(v, {"x-hub-signature-256": f"sha256={bad}"}, BODY) == "mismatch"


def test_hmac_key_repr_hides_the_key():
    assert "k" * 8 not in repr(HmacKey(b"k" * 32))
