"""Learning the ensemble on labelled images: weights, class gains, cleanup thresholds, the cache."""
