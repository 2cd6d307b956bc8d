"""The stage registry (:mod:`~sematlas.pipeline.registry`: notebook, library code, reads, writes), content-hash
freshness (:mod:`~sematlas.pipeline.freshness`) and the runner with its command line
(:mod:`~sematlas.pipeline.stages`, ``python -m sematlas.pipeline``).
"""
