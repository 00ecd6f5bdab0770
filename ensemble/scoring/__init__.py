"""Offline scores: the course metric, the stage-by-stage ablation, CSV scoring and plots."""
