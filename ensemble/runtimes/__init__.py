"""Where a member's math runs: ONNX Runtime on the member as exported or on its folded graph
(always there), or OpenVINO (the optional `ens[openvino]` extra), and the per-member choice."""
