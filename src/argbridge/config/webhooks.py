"""Configuration of inbound webhook sources (``argus-webhook`` and generic ``webhook``).

Each source is served at ``POST /webhooks/<source name>`` on the daemon's listener.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ModelWrapValidatorHandler, model_validator

from argbridge.config.base import (
    ByteSize,
    Duration,
    RawProblem,
    Secret,
    StrictModel,
    UnresolvedSecret,
    supplement_field_errors,
)
from argbridge.signing import decode_secret

ID_HEADER_STANDARD = (
    "standard-webhooks uses its signed webhook-id; id_header is only for hmac-sha256 and slack-v0"
)


class WebhookSourceBase(StrictModel):
    """What every inbound webhook source has: a signature scheme and its secrets."""

    scheme: Literal["standard-webhooks", "hmac-sha256", "slack-v0"] = "standard-webhooks"
    #: One or more secrets; any match verifies (key rotation).
    secrets: list[Secret] = Field(min_length=1)
    #: Header carrying the signature for ``hmac-sha256`` (GitHub: X-Hub-Signature-256).
    signature_header: str = "X-Hub-Signature-256"
    #: hmac-sha256 / slack-v0 only: header carrying a delivery id used for replay
    #: protection (e.g. X-GitHub-Delivery). Unset: the SHA-256 of the (signed) body. Such
    #: a header is not covered by the signature, so a captured request replayed with a
    #: new id is not recognised; the body hash has no such gap. standard-webhooks always
    #: uses its signed ``webhook-id``.
    id_header: str | None = None
    #: Accepted clock skew of signed timestamps, and the replay-protection window.
    tolerance: Duration = 300.0
    #: Larger bodies get 413 (checked while streaming).
    max_body: ByteSize = 1024 * 1024
    #: The whole body must arrive within this time, else 408 (slow-loris bound).
    body_timeout: Duration = 10.0
    #: ``Retry-After`` seconds sent with 503 while the journal signals backpressure.
    retry_after: int = Field(default=5, ge=1, le=3600)

    @model_validator(mode="wrap")
    @classmethod
    def _raw_id_header(
        cls, data: Any, handler: ModelWrapValidatorHandler[WebhookSourceBase]
    ) -> Any:
        # The id_header check of _secrets_usable on the raw input, with field errors.
        problems: list[RawProblem] = []
        if isinstance(data, dict) and data.get("id_header") is not None:
            if data.get("scheme", "standard-webhooks") == "standard-webhooks":
                problems.append((("id_header",), ID_HEADER_STANDARD))
        return supplement_field_errors(data, handler, problems)

    @model_validator(mode="after")
    def _secrets_usable(self) -> WebhookSourceBase:
        if self.id_header is not None and self.scheme == "standard-webhooks":
            raise ValueError(f"id_header: {ID_HEADER_STANDARD}")
        for i, secret in enumerate(self.secrets):
            if isinstance(secret, UnresolvedSecret):
                continue  # check-config --no-environment: the value is not read
            try:
                decode_secret(self.scheme, secret.get_secret_value())
            except ValueError as exc:
                # The message never contains the secret itself.
                raise ValueError(f"secrets.{i}: {exc}") from None
        return self


class ArgusWebhookSourceConfig(WebhookSourceBase):
    """Argus incident lifecycle webhooks → ``argus.incident.<action>``."""

    type: Literal["argus-webhook"]
    #: Optional enrichment with similar incidents (off by default).
    enrich_similar: bool = False
    argus_base_url: str = "https://argus.ekarche.com/api/v1"
    argus_token: Secret | None = None
    #: Bound of one similar-incidents call (it runs after the webhook was answered).
    enrich_timeout: Duration = 2.0
    #: Enrichment calls waiting at most; beyond this, new ones are skipped (and counted).
    enrich_queue: int = Field(default=1000, ge=1)


class GenericWebhookSourceConfig(WebhookSourceBase):
    """Any tool posting JSON through the same verified path; type comes from config."""

    type: Literal["webhook"]
    ce_type: str = "webhook.received"
    #: CloudEvents ``source``; default ``urn:argbridge:webhook:<source name>``.
    ce_source: str | None = None
    #: Top-level body field used as ``subject``/``partitionkey`` when present.
    subject_field: str | None = None
