"""argbridge: Arga/Argus event feeds → CloudEvents → Kafka, Slack and signed webhooks."""

__version__ = "0.1.0"
