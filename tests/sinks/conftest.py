"""Fixtures of the sink tests: the brokers come from tests/support/kafka_fixtures.py
(``broker``, ``kafka``, ``kafka_cluster``, ``kafka_any``)."""
