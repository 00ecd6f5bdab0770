"""Labelled and test images: the course npz (streamed), the validation split, outliers and image sources."""
