"""sematlas: a generative, hierarchical atlas of human brain function.

The notebooks of the compendium narrate; this package computes. Modules:

- :mod:`sematlas.params`   layered, validated YAML parameters
- :mod:`sematlas.paths`    where every stage reads and writes
- :mod:`sematlas.io`       atomic writes and checksums
- :mod:`sematlas.fetch`    Neurosynth v7 through NiMARE, offline mirrors, SHA-256
- :mod:`sematlas.curation` deduplication, coordinate validation, study table, splits
- :mod:`sematlas.samplesize` sparse sample sizes from NiMARE's NeuroStore studyset
- :mod:`sematlas.grid`     MNI152 grids and brain masks per resolution
- :mod:`sematlas.render`   fast peak-to-density rendering
- :mod:`sematlas.datamodule` the LightningDataModule over rendered maps
"""

__version__ = "0.1.0"
