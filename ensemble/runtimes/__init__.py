"""Where a member's math runs: ONNX Runtime (always there) or OpenVINO (the optional `ens[openvino]`
extra), and the per-member choice between them."""
