"""A local stand-in for Amazon Nova Sonic (Bedrock's ``InvokeModelWithBidirectionalStream``).

Pipecat's unmodified ``AWSNovaSonicLLMService`` talks to it as to Bedrock: HTTP/2 over TLS (a CA made
per run, trusted through ``SSL_CERT_FILE``), reached through ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``,
SigV4 on the request and on every event, the SDK's own event-stream codec both ways, and the
documented input events checked (:mod:`local.nova_sonic.events`). It answers offline: pocketsphinx
hears the caller, the local responder's words are spoken by espeak-ng at 24 kHz, barge-in interrupts
an answer, tool phrases raise ``toolUse`` events, and a session ends at its time limit as Nova
Sonic's does (:mod:`local.nova_sonic.model`).

Modules: ``standin`` (start, stop, the CA), ``server`` (HTTP/2 and the checks), ``wire`` (the SDK's
event-stream codec), ``events`` (the documented input events), ``outputs`` (the output events),
``model`` (the offline answers), ``credentials`` (temporary credentials and the role's endpoint),
``tls``, ``config``.
"""
