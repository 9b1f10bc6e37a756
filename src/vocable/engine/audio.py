"""PCM16 helpers, re-exported from their home, ``vocable.audio`` (the bottom layer, so providers can use them)."""

from vocable.audio import SAMPLE_WIDTH, Framer, Resampler, duration_ms, resample_pcm

__all__ = ["SAMPLE_WIDTH", "Framer", "Resampler", "duration_ms", "resample_pcm"]
