"""The release stage: ONNX export with onnxruntime parity (:mod:`~sematlas.release.onnx`), tables and
their data dictionary (:mod:`~sematlas.release.tables`), checksums, README and archive
(:mod:`~sematlas.release.archive`).
"""
