"""Pipecat voice agent for Amazon Bedrock AgentCore Runtime.

The agent answers WebRTC offers that arrive as AgentCore invocations, with the TURN credentials the
broker drew for it from the pool of KVS signaling channels and sent inside the invocation (the agent
itself never calls KVS unless run standalone with ``AGENT_ICE_SERVERS=broker``), and runs one voice
pipeline per call:
``nova-sonic`` (speech to speech), ``cascade`` (Transcribe, Bedrock, Polly) or ``local`` (offline).
Run it with ``python -m agent``; see :mod:`agent.config` for the environment variables.

This module imports nothing heavy, so tooling can read the package without Pipecat installed.
"""
