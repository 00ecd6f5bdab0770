"""Members: the ONNX contract, the store, the ensemble file and the one ONNX Runtime session factory."""
