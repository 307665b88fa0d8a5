"""Configuration of inbound webhook sources (``argus-webhook`` and generic ``webhook``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from argbridge.config.base import ByteSize, Duration, Secret, StrictModel


class WebhookSourceBase(StrictModel):
    """What every inbound webhook source has: a signature scheme and its secrets."""

    scheme: Literal["standard-webhooks", "hmac-sha256", "slack-v0"] = "standard-webhooks"
    #: One or more secrets; any match verifies (key rotation).
    secrets: list[Secret] = Field(min_length=1)
    #: Header carrying the signature for ``hmac-sha256`` (GitHub: X-Hub-Signature-256).
    signature_header: str = "X-Hub-Signature-256"
    #: Header carrying a delivery id for replay protection (scheme default when unset).
    id_header: str | None = None
    tolerance: Duration = 300.0
    max_body: ByteSize = 1024 * 1024


class ArgusWebhookSourceConfig(WebhookSourceBase):
    """Argus incident lifecycle webhooks → ``argus.incident.<action>``."""

    type: Literal["argus-webhook"]
    #: Optional enrichment with similar incidents (off by default).
    enrich_similar: bool = False
    argus_base_url: str = "https://argus.ekarche.com/api/v1"
    argus_token: Secret | None = None
    enrich_timeout: Duration = 2.0


class GenericWebhookSourceConfig(WebhookSourceBase):
    """Any tool posting JSON through the same verified path; type comes from config."""

    type: Literal["webhook"]
    ce_type: str = "webhook.received"
    ce_source: str | None = None
