"""Labelled and test images: the course npz (streamed), the validation split, outliers and image
sources; TTA views of a batch, and confusion statistics and metrics of labels against masks."""
