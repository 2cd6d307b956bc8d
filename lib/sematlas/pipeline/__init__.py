"""The stage registry (:mod:`~sematlas.pipeline.registry`: notebook, library code, reads, writes), content-hash
freshness (:mod:`~sematlas.pipeline.freshness`), the runner with its command line
(:mod:`~sematlas.pipeline.stages`, ``python -m sematlas.pipeline``), what the terminal shows while a stage
runs (:mod:`~sematlas.pipeline.console`) and the summary of a run (:mod:`~sematlas.pipeline.summary`).
"""
