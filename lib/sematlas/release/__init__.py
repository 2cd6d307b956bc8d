"""The release stage: ONNX export with onnxruntime parity, NIfTI maps, tables, archive and checksums."""
