"""Resumable runs: a prediction's work as shards under a run directory keyed by what decides the
labels, assembled into the submission CSV in source order; the local and the Ray engines share them."""
