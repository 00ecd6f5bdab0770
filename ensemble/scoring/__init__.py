"""Offline scores: CSVs and ensembles scored with the metrics of `data/metrics.py`, the stage-by-stage
ablation, and plots."""
