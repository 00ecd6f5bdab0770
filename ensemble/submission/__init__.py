"""Submission CSVs: run-length and flat formats, their checks, readers and writers."""
