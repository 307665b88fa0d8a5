"""Cluster mode: several instances share the work and survive one another through Kafka.

Pure parts (record schemas, encoding) live beside the I/O drivers (the control-topic
member, the events-topic producer, the delivery consumers); see DESIGN, "Cluster mode",
and docs/cluster.md.
"""
