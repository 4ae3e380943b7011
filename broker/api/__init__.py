"""The broker API: the Pipecat client contract (``/start``, offer, candidates) over Lambda or local HTTP."""
