"""Resumable runs: the predict job (`predict.py`), its work as shards under a run directory keyed by
what decides the labels, assembled into the submission CSV in source order; the local and the Ray
engines share them."""
