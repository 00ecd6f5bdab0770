"""Framework model -> canonical ONNX member: one loader per framework, one contract wrapper, one verifier.

Framework modules (torch_export, keras_export) are imported only when a source needs them, so
this package imports with numpy, onnx and onnxruntime alone.
"""

from exporters.pipeline import ExportResult, export_member
from exporters.preprocessing import Normalisation
from exporters.request import ExportRequest

__all__ = ["ExportRequest", "ExportResult", "Normalisation", "export_member"]
