"""Where every stage reads and writes.

All generated outputs live inside the project, per profile, so that profiles
never overwrite each other: ``data/processed/<profile>/``, ``data/models/<profile>/``,
``data/results/<profile>/``, ``data/release/<profile>/``, ``figures/<profile>/`` and
``notebooks/executed/<profile>/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _is_root(path: Path) -> bool:
    return (path / "params" / "common.yaml").is_file() and (path / "lib" / "sematlas").is_dir()


def project_root() -> Path:
    """The project root.

    ``SEMATLAS_ROOT`` wins; otherwise the first ancestor of the working
    directory (nbval runs a notebook from its own folder) or of this package
    (an editable install) that holds ``params/common.yaml`` and ``lib/sematlas``.
    """
    env = os.environ.get("SEMATLAS_ROOT")
    if env:
        root = Path(env).resolve()
        if not _is_root(root):
            raise FileNotFoundError(f"SEMATLAS_ROOT={env} is not a sematlas project (no params/common.yaml)")
        return root
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for candidate in (start, *start.parents):
            if _is_root(candidate):
                return candidate
    raise FileNotFoundError("cannot find the sematlas project root; set SEMATLAS_ROOT")


@dataclass(frozen=True)
class ProfilePaths:
    """Output folders of one profile.

    Parameters
    ----------
    profile : str
        Profile name (``ci``, ``quick``, ``cpu-full``, ``gpu``).
    root : Path
        Project root.
    """

    profile: str
    root: Path

    @classmethod
    def for_profile(cls, profile: str, root: Path | None = None) -> ProfilePaths:
        return cls(profile=profile, root=(root or project_root()))

    @property
    def raw(self) -> Path:
        """Fetched inputs, shared by all profiles (``data/raw``)."""
        return self.root / "data" / "raw"

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed" / self.profile

    @property
    def models(self) -> Path:
        return self.root / "data" / "models" / self.profile

    @property
    def results(self) -> Path:
        return self.root / "data" / "results" / self.profile

    @property
    def cache(self) -> Path:
        """Computations any stage may reuse, saved under a fingerprint of their inputs: in no stage's outputs."""
        return self.root / "data" / "cache" / self.profile

    @property
    def linear_baselines(self) -> Path:
        """The linear baselines' saved scores, shared by every stage (:mod:`sematlas.evaluation.linear`)."""
        return self.cache / "linear_baselines"

    @property
    def release(self) -> Path:
        return self.root / "data" / "release" / self.profile

    @property
    def figures(self) -> Path:
        return self.root / "figures" / self.profile

    @property
    def executed(self) -> Path:
        return self.root / "notebooks" / "executed" / self.profile
