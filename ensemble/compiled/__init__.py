"""The whole ensemble as one ONNX graph (`ens compile`) and the engine that runs it in `ens predict`."""
