"""Bounds that the ensemble file (members/) checks and inference applies: class gains and cleanup
areas. They live below both layers, so that reading an ensemble file needs no inference code."""

MIN_GAIN, MAX_GAIN = 1e-6, 1e6  # a gain multiplies a probability in float32: far from 0 and overflow
MAX_AREA = 2**31 - 1  # far above any image's pixel count; int32 so the cleanup kernel's compare is exact
