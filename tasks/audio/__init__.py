"""Spoken-word recognition with a spectrogram transformer built from ``mha`` blocks (``task=audio``)."""
