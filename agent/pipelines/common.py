"""Pieces the pipelines share."""

from __future__ import annotations

import copy
import functools

from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams


@functools.cache
def _process_silero_model() -> SileroOnnxModel:
    """The process's one Silero ONNX Runtime session (its model ships inside the pipecat wheel)."""
    return SileroVADAnalyzer()._model


class SharedSessionSileroVADAnalyzer(SileroVADAnalyzer):
    """Pipecat's Silero VAD on the process's one ONNX Runtime session, with a recurrent state of its own.

    Pipecat's analyzer opens a new ONNX Runtime session for every instance, about 40 ms of CPU per
    call. The session holds no state between windows (the model's recurrent state and context go in
    and out of every ``run``, and stay in each analyzer's own ``SileroOnnxModel``), and ONNX Runtime
    allows concurrent ``run`` calls on one session, so every call's analyzer can share it.

    Args:
        params: The VAD's thresholds and timings.
    """

    def __init__(self, *, params: VADParams) -> None:
        VADAnalyzer.__init__(self, params=params)  # Silero's own __init__ would open a new session
        self._model = copy.copy(_process_silero_model())
        self._model.reset_states()  # type: ignore[no-untyped-call]
        self._windows_since_reset = 0
        self._low_confidence_windows = 0


def silero_vad() -> SileroVADAnalyzer:
    """A Silero VAD analyzer for one call (the model loads offline, once per process)."""
    return SharedSessionSileroVADAnalyzer(params=VADParams(stop_secs=0.5))
