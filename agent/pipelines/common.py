"""Pieces the pipelines share."""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams


def silero_vad() -> SileroVADAnalyzer:
    """A Silero VAD analyzer (its model ships inside the pipecat wheel and loads offline)."""
    return SileroVADAnalyzer(params=VADParams(stop_secs=0.5))
