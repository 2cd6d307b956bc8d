"""The study metadata vector the conditional models see.

:class:`MetadataEncoder` turns study-table rows (or a user's request) into the
tensors of the data contract:

- ``cond`` ``(batch, n_topics + 5)`` with ``inputs="topics"`` (the default): what
  the study is about, as its LDA-50 topic weights standardised per topic, then the
  standardised year, the standardised log peak count and the space-label one-hot;
  ``(batch, n_categories + 5)`` with ``inputs="category"`` (the ablation): the
  task-category one-hot in place of the topics;
- ``sparse`` ``(batch, 1)``: standardised log sample size, 0 where missing;
- ``sparse_mask`` ``(batch, 1)``: True where the sample size is known;
- ``year_bin`` ``(batch,)`` and ``task`` ``(batch,)``: class indices (``task``, the
  task category, is a label for evaluation and queries in both modes).

The standardisation statistics, the topic profiles of the task categories and
the topics' key words are fitted on (or given with) the training split only and
travel with every checkpoint, so a model decodes a request exactly as it was
trained, with no file beside it.

A request (:meth:`MetadataEncoder.request`) says what a study is about in one of
three ways: a task category (its training studies' mean topic profile), topic
weights, or free text matched to the topics' key words. Topic weights and text
become a query profile ``q`` (summing to 1) that is mixed with the corpus mean
profile ``c`` of the training studies, ``QUERY_BLEND * q + (1 - QUERY_BLEND) * c``,
so that a query names the topics it raises while the others stay at typical
levels rather than at a zero no abstract has.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sematlas.core.params import Params

logger = logging.getLogger(__name__)

SPACES = ("MNI", "TAL", "UNKNOWN")
YEAR_RANGE = (1997, 2018)
#: What the metadata vector holds besides year, peaks and space: topic weights, or the task-category one-hot.
INPUTS = ("topics", "category")
#: The study table's topic-weight columns start with this (``topic_00`` ... ``topic_49``).
TOPIC_PREFIX = "topic_"
#: LDA-50 topic keys shipped with Neurosynth v7 (index, Dirichlet weight, key words; no header).
TOPIC_KEYS_FILE = "data-neurosynth_version-7_vocab-LDA50_keys.tsv"
#: Key words that name a topic (``topic_32`` -> "pain somatosensory stimulation"), as
#: :func:`sematlas.analysis.clustering.topic_names` makes them.
TOPIC_NAME_WORDS = 3
#: Share of a topics or text query's own profile in the profile it becomes; the rest is the
#: corpus mean profile (the blend of the module docstring).
QUERY_BLEND = 0.5
#: Words a text query drops silently: they carry no topic (none of them is a v7 key word).
STOP_WORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or that the their this to vs with".split()
)
#: Prior for log sample size when the training split has too few known values to fit one:
#: a typical fMRI study of 2010 had about 20 participants (log 20 = 3.0, sd 0.5).
_DEFAULT_LOG_SAMPLE_SIZE = (3.0, 0.5)
#: Smallest spread a topic is standardised by. A topic whose weight varies by less than 1% of an
#: abstract across the training studies carries no usable signal (the smallest of the v7 topics
#: varies by about 4%); the floor keeps it (and a constant topic, std 0) from turning a request's
#: small deviation into a huge input.
_TOPIC_STD_FLOOR = 0.01
#: Suggestions an unknown word of a text query gets.
_N_SUGGESTIONS = 5


def read_topic_keys(path: str | Path) -> list[list[str]]:
    """The key words of each LDA topic, strongest first, from a Neurosynth keys file.

    Parameters
    ----------
    path : str or Path
        Tab-separated, no header: topic index, Dirichlet weight, space-separated key words.

    Returns
    -------
    list of list of str, length n_topics
        In topic order (index 0 first).

    Raises
    ------
    ValueError
        Topic indices that are not 0, 1, ..., n_topics - 1.
    """
    keys = pd.read_csv(path, sep="\t", header=None, names=["topic", "weight", "words"]).sort_values("topic")
    if keys["topic"].tolist() != list(range(len(keys))):
        raise ValueError(f"{path}: topic indices are not 0..{len(keys) - 1}")
    return [str(words).split() for words in keys["words"]]


@dataclass
class MetadataEncoder:
    """Encode study metadata as conditioning tensors.

    Parameters
    ----------
    categories : sequence of str
        Task-category names, in one-hot (and ``task`` label) order.
    year_bin_edges : sequence of float
        Edges of the publication-year bins (from curation).
    stats : dict, optional
        Standardisation of year, log peak count and log sample size (set by :meth:`fit`).
    inputs : {"topics", "category"}
        What ``cond`` holds besides year, peaks and space: the standardised topic
        weights, or the task-category one-hot (the ablation ``metadata: category``).
    topic_columns : list of str
        The study table's topic columns, in ``cond`` order (set by :meth:`fit`;
        :meth:`transform` requires them with ``inputs="topics"``).
    corpus_profile : list of float, length n_topics
        Mean raw topic profile of the training studies (the topics' standardisation mean).
    topic_std : list of float, length n_topics
        Standard deviation (ddof 0) of each topic weight over the training studies, floored.
    category_profiles : dict
        Category name -> mean raw topic profile of its training studies (the corpus
        profile for a category without training studies), length n_topics each.
    topic_keys : list of list of str, optional
        Key words of each topic, strongest first, in topic order: topic names and
        text queries need them.

    Notes
    -----
    ``__init__`` only stores parameters; :meth:`fit` learns the statistics.
    """

    categories: Sequence[str]
    year_bin_edges: Sequence[float]
    stats: dict[str, float] = field(default_factory=dict)
    inputs: str = "topics"
    topic_columns: list[str] = field(default_factory=list)
    corpus_profile: list[float] = field(default_factory=list)
    topic_std: list[float] = field(default_factory=list)
    category_profiles: dict[str, list[float]] = field(default_factory=dict)
    topic_keys: list[list[str]] | None = None

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise ValueError(f"MetadataEncoder inputs must be one of {', '.join(INPUTS)}; got {self.inputs!r}")

    # ------------------------------------------------------------------ sizes
    @property
    def n_topics(self) -> int:
        """Topic columns of the training table (0 before :meth:`fit`, or for a table without topics)."""
        return len(self.topic_columns)

    @property
    def cond_dim(self) -> int:
        """Width of ``cond``: n_topics (or n_categories) + year + log peaks + len(SPACES)."""
        if self.inputs == "topics" and not self.topic_columns:
            raise RuntimeError("a topics MetadataEncoder knows its width once fitted: call fit() first")
        leading = self.n_topics if self.inputs == "topics" else len(self.categories)
        return leading + 2 + len(SPACES)

    @property
    def n_year_bins(self) -> int:
        return len(self.year_bin_edges) - 1

    @property
    def topic_names(self) -> list[str] | None:
        """Each topic's first ``TOPIC_NAME_WORDS`` key words joined by spaces, in topic order (None without keys)."""
        if self.topic_keys is None:
            return None
        return [" ".join(words[:TOPIC_NAME_WORDS]) for words in self.topic_keys]

    # ---------------------------------------------------------------- fitting
    def fit(self, studies: pd.DataFrame, topic_keys: Sequence[Sequence[str]] | None = None) -> MetadataEncoder:
        """Fit the standardisation statistics and topic profiles on (training) study rows.

        Parameters
        ----------
        studies : DataFrame, shape (n_studies, ...)
            Columns ``task_category``, ``year``, ``n_peaks``, ``sample_size`` and the
            topic weights ``topic_00`` ... (found by the prefix ``topic_``, kept in
            table order; required with ``inputs="topics"``).
        topic_keys : sequence of sequence of str, optional
            Key words of each topic in topic order (:func:`read_topic_keys`), stored
            so a saved encoder answers text queries on its own. Ignored when the
            table has no topic columns (nothing to name).

        Returns
        -------
        MetadataEncoder
            ``self``.

        Raises
        ------
        ValueError
            ``inputs="topics"`` and no topic column, or ``topic_keys`` for another number of topics.
        """
        log_peaks = np.log(studies["n_peaks"].to_numpy(dtype=float))
        observed = np.log(studies["sample_size"].dropna().to_numpy(dtype=float))
        mean_ss, std_ss = (observed.mean(), observed.std()) if len(observed) >= 5 else _DEFAULT_LOG_SAMPLE_SIZE
        self.stats = {
            "year_mean": float(studies["year"].mean()),
            "year_std": float(studies["year"].std() or 1.0),
            "log_peaks_mean": float(log_peaks.mean()),
            "log_peaks_std": float(log_peaks.std() or 1.0),
            "log_sample_size_mean": float(mean_ss),
            "log_sample_size_std": float(std_ss or 1.0),
        }
        self.topic_columns = [str(c) for c in studies.columns if str(c).startswith(TOPIC_PREFIX)]
        if self.inputs == "topics" and not self.topic_columns:
            raise ValueError(
                f"MetadataEncoder inputs='topics' needs the study table's topic weights "
                f"({TOPIC_PREFIX}00, {TOPIC_PREFIX}01, ...); the table has none "
                "(inputs='category' encodes the task category instead)"
            )
        self._fit_topics(studies)
        if topic_keys is not None and self.topic_columns:
            if len(topic_keys) != self.n_topics:
                raise ValueError(
                    f"topic_keys lists {len(topic_keys)} topics, but the study table has {self.n_topics} topic columns"
                )
            self.topic_keys = [[str(word) for word in words] for words in topic_keys]
        else:
            self.topic_keys = None
        return self

    def _fit_topics(self, studies: pd.DataFrame) -> None:
        """Topic standardisation, corpus and category profiles (all empty without topic columns)."""
        if not self.topic_columns:
            self.corpus_profile, self.topic_std, self.category_profiles = [], [], {}
            return
        weights = self._topic_matrix(studies)
        corpus = weights.mean(axis=0)
        self.topic_std = np.maximum(weights.std(axis=0), _TOPIC_STD_FLOOR).tolist()
        self.corpus_profile = corpus.tolist()
        labels = studies["task_category"].to_numpy()
        empty = [name for name in self.categories if not (labels == name).any()]
        if empty:
            logger.warning(
                "task categories without training studies take the corpus mean profile: %s", ", ".join(empty)
            )
        self.category_profiles = {
            name: (weights[labels == name].mean(axis=0) if name not in empty else corpus).tolist()
            for name in self.categories
        }

    def _topic_matrix(self, studies: pd.DataFrame) -> np.ndarray:
        """The raw topic weights of ``studies``, shape (n_studies, n_topics), float64."""
        missing = [c for c in self.topic_columns if c not in studies.columns]
        if missing:
            raise ValueError(
                f"the study table lacks topic column {missing[0]!r} ({len(missing)} of the encoder's "
                f"{self.n_topics} topic columns {self.topic_columns[0]}..{self.topic_columns[-1]} are missing)"
            )
        weights = studies[self.topic_columns].to_numpy(dtype=float)
        if not np.isfinite(weights).all():
            raise ValueError("topic weights must be finite (a NaN or inf is in the study table)")
        return weights

    # ---------------------------------------------------------------- encoding
    def transform(self, studies: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Encode study rows.

        Parameters
        ----------
        studies : DataFrame, shape (n, ...)
            Columns ``task_category``, ``year``, ``n_peaks``, ``space``, ``sample_size``
            (NaN = unknown) and, with ``inputs="topics"``, every one of ``topic_columns``.

        Returns
        -------
        dict of tensors
            ``cond`` (n, cond_dim), ``sparse`` (n, 1), ``sparse_mask`` (n, 1),
            ``year_bin`` (n,), ``task`` (n,).

        Raises
        ------
        RuntimeError
            The encoder is not fitted.
        ValueError
            An unknown task category, or (topics) a missing topic column or a non-finite weight.
        """
        if not self.stats:
            raise RuntimeError("MetadataEncoder is not fitted: call fit() on the training studies first")
        unknown = sorted(set(studies["task_category"]) - set(self.categories))
        if unknown:
            raise ValueError(f"unknown task category {unknown[0]!r}; allowed: {', '.join(self.categories)}")
        task = (
            studies["task_category"].map({name: i for i, name in enumerate(self.categories)}).to_numpy(dtype=np.int64)
        )
        if self.inputs == "topics":
            about = (self._topic_matrix(studies) - np.asarray(self.corpus_profile)) / np.asarray(self.topic_std)
        else:
            about = np.eye(len(self.categories))[task]
        space = studies["space"].where(studies["space"].isin(SPACES), "UNKNOWN")
        space_index = space.map({name: i for i, name in enumerate(SPACES)}).to_numpy()
        year = studies["year"].to_numpy(dtype=float)
        s = self.stats
        cond = np.concatenate(
            [
                about,
                ((year - s["year_mean"]) / s["year_std"])[:, None],
                ((np.log(studies["n_peaks"].to_numpy(dtype=float)) - s["log_peaks_mean"]) / s["log_peaks_std"])[
                    :, None
                ],
                np.eye(len(SPACES))[space_index],
            ],
            axis=1,
        )
        sample_size = studies["sample_size"].to_numpy(dtype=float)
        known = np.isfinite(sample_size)
        sparse = np.where(
            known,
            (np.log(np.where(known, sample_size, 1.0)) - s["log_sample_size_mean"]) / s["log_sample_size_std"],
            0.0,
        )
        year_bin = np.clip(
            np.searchsorted(np.asarray(self.year_bin_edges)[1:-1], year, side="right"), 0, self.n_year_bins - 1
        )
        return {
            "cond": torch.as_tensor(cond, dtype=torch.float32),
            "sparse": torch.as_tensor(sparse[:, None], dtype=torch.float32),
            "sparse_mask": torch.as_tensor(known[:, None]),
            "year_bin": torch.as_tensor(year_bin, dtype=torch.long),
            "task": torch.tensor(task, dtype=torch.long),
        }

    # ---------------------------------------------------------------- requests
    def request(self, metadata: Mapping[str, Any], default_n_peaks: float | None = None) -> dict[str, torch.Tensor]:
        """Encode one user request, e.g. ``{"text": "working memory", "year": 2012, "sample_size": 24}``.

        Parameters
        ----------
        metadata : mapping
            Exactly one of

            - ``task``: a category name. Topics inputs: the category's mean topic
              profile; category inputs: its one-hot.
            - ``topics``: topic -> weight (>= 0, not all 0), a topic named by its
              index (int), its column (``"topic_07"``) or its name (:attr:`topic_names`,
              e.g. ``"pain somatosensory stimulation"``). The weights are normalised
              to sum 1 (unlisted topics 0) and mixed with the corpus mean profile by
              ``QUERY_BLEND``.
            - ``text``: free text. Its lower-cased words, stop-words (``STOP_WORDS``)
              dropped, are looked up in the topics' key words; a word that is a key of
              topic ``t`` at rank ``r`` (0: the strongest) adds ``1 / (1 + r)`` to
              ``t``'s weight, and the weights become a profile as for ``topics``.
              The v7 keys are single words, so a phrase is matched word by word.

            ``topics`` and ``text`` need ``inputs="topics"``; their ``task`` label is
            the category whose mean profile is nearest (Euclidean, standardised
            topics) to the request's. Besides: ``year`` (default the training mean),
            ``space`` (MNI), ``n_peaks`` (``default_n_peaks``, else the training
            geometric mean) and ``sample_size`` (missing stays missing: the model
            imputes it).
        default_n_peaks : float, optional

        Returns
        -------
        dict of tensors
            As :meth:`transform`, one row.

        Raises
        ------
        RuntimeError
            The encoder is not fitted.
        ValueError
            Naming the field: an unknown key (listing the allowed ones), none or more
            than one of task / topics / text, an unknown category (listing the allowed
            ones), a topics or text request to a category encoder, an unknown topic or
            a bad weight, an unknown word of a text (with the closest key words) or a
            text without any key word, text queries without topic keys, a year outside
            1997-2018, or a non-positive sample size or peak count.
        """
        if not self.stats:
            raise RuntimeError("MetadataEncoder is not fitted: call fit() on the training studies first")
        about_keys = ("task", "topics", "text")
        allowed = {*about_keys, "year", "sample_size", "n_peaks", "space"}
        extra = sorted(set(metadata) - allowed)
        if extra:
            raise ValueError(f"unknown metadata key {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")
        given = [key for key in about_keys if key in metadata]
        if len(given) != 1:
            found = f"got {' and '.join(repr(k) for k in given)}" if given else f"tasks: {', '.join(self.categories)}"
            raise ValueError(f"metadata needs exactly one of 'task', 'topics' or 'text'; {found}")
        task, profile = self._about(given[0], metadata[given[0]])
        year = float(metadata.get("year", round(self.stats["year_mean"])))
        if not YEAR_RANGE[0] <= year <= YEAR_RANGE[1]:
            raise ValueError(
                f"year {year:g} is outside the years the atlas was trained on "
                f"({YEAR_RANGE[0]}-{YEAR_RANGE[1]}; Neurosynth v7 ends in 2018)"
            )
        sample_size = metadata.get("sample_size")
        if sample_size is not None and not float(sample_size) > 0:
            raise ValueError(f"sample_size must be positive, got {sample_size!r}")
        n_peaks = metadata.get("n_peaks", default_n_peaks or float(np.exp(self.stats["log_peaks_mean"])))
        if not float(n_peaks) > 0:
            raise ValueError(f"n_peaks must be positive, got {n_peaks!r}")
        row: dict[str, list[Any]] = {
            "task_category": [task],
            "year": [year],
            "n_peaks": [float(n_peaks)],
            "space": [metadata.get("space", "MNI")],
            "sample_size": [np.nan if sample_size is None else float(sample_size)],
        }
        if profile is not None:
            row.update({column: [float(weight)] for column, weight in zip(self.topic_columns, profile)})
        return self.transform(pd.DataFrame(row))

    def _about(self, key: str, value: Any) -> tuple[str, np.ndarray | None]:
        """What a request is about: its task label and, with topics inputs, its raw topic profile (n_topics,)."""
        if key == "task":
            if value not in self.categories:
                raise ValueError(f"unknown task category {value!r}; allowed: {', '.join(self.categories)}")
            return value, np.asarray(self.category_profiles[value]) if self.inputs == "topics" else None
        if self.inputs != "topics":
            raise ValueError(
                f"metadata {key!r}: this encoder reads task categories (inputs='category'), not topics; "
                f"ask for a 'task', one of {', '.join(self.categories)}"
            )
        query = self._topic_query(value) if key == "topics" else self._text_query(value)
        profile = QUERY_BLEND * query / query.sum() + (1.0 - QUERY_BLEND) * np.asarray(self.corpus_profile)
        return self._nearest_category(profile), profile

    def _topic_query(self, weights: Any) -> np.ndarray:
        """A ``topics`` request's weights by topic index, shape (n_topics,), unlisted topics 0."""
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError("metadata 'topics' must be a non-empty mapping of topic (index, column or name) to weight")
        query = np.zeros(self.n_topics)
        seen: set[int] = set()
        for topic, weight in weights.items():
            index = self._topic_index(topic)
            if index in seen:
                raise ValueError(f"metadata 'topics': topic {self.topic_columns[index]} is given twice")
            seen.add(index)
            try:
                value = float(weight)
            except (TypeError, ValueError):
                value = float("nan")
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"metadata 'topics': the weight of {topic!r} must be a number >= 0, got {weight!r}")
            query[index] = value
        if not query.sum() > 0:
            raise ValueError("metadata 'topics': the weights are all 0; give at least one positive weight")
        return query

    def _topic_index(self, topic: Any) -> int:
        """The index of a topic named by its index, its column or its name."""
        if isinstance(topic, (int, np.integer)) and not isinstance(topic, bool):
            if not 0 <= int(topic) < self.n_topics:
                raise ValueError(f"metadata 'topics': topic index {topic} is outside 0..{self.n_topics - 1}")
            return int(topic)
        if isinstance(topic, str):
            if topic in self.topic_columns:
                return self.topic_columns.index(topic)
            names = self.topic_names or []
            matches = [i for i, name in enumerate(names) if name == topic.strip().lower()]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ValueError(f"metadata 'topics': the name {topic!r} is ambiguous; use a column name")
            wanted = topic.strip().lower()
            # A single word ("pain") is far from every three-word name by edit distance: offer the names holding it.
            close = [name for name in names if wanted in name.split()] or difflib.get_close_matches(
                wanted, names, n=_N_SUGGESTIONS
            )
            if not names:
                hint = "this encoder has no topic keys, so only indices and column names are known"
            else:
                hint = f"closest names: {', '.join(close[:_N_SUGGESTIONS])}" if close else "no name is close to it"
            raise ValueError(f"metadata 'topics': unknown topic {topic!r} ({hint})")
        raise ValueError(f"metadata 'topics': a topic is an index, a column or a name, got {topic!r}")

    def _text_query(self, text: Any) -> np.ndarray:
        """A ``text`` request's key-word weights by topic, shape (n_topics,)."""
        if self.topic_keys is None:
            raise ValueError(
                f"metadata 'text': this encoder was fitted without topic keys ({TOPIC_KEYS_FILE}), "
                "so it cannot read text; ask for a 'task' or 'topics'"
            )
        if not isinstance(text, str):
            raise ValueError(f"metadata 'text' must be a string, got {text!r}")
        ranks: dict[str, list[tuple[int, int]]] = {}
        for topic, words in enumerate(self.topic_keys):
            for rank, word in enumerate(words):
                ranks.setdefault(word, []).append((topic, rank))
        words = [word for word in re.findall(r"[a-z0-9]+", text.lower()) if word not in STOP_WORDS]
        for word in words:
            if word not in ranks:
                close = difflib.get_close_matches(word, list(ranks), n=_N_SUGGESTIONS)
                raise ValueError(
                    f"metadata 'text': unknown word {word!r} (not a key word of any topic); "
                    + (f"closest key words: {', '.join(close)}" if close else "no key word is close to it")
                )
        if not words:
            raise ValueError(f"metadata 'text': {text!r} has no word the topics know (only stop-words or none)")
        query = np.zeros(self.n_topics)
        for word in words:
            for topic, rank in ranks[word]:
                query[topic] += 1.0 / (1.0 + rank)
        return query

    def _nearest_category(self, profile: np.ndarray) -> str:
        """The category whose mean topic profile is nearest ``profile`` (n_topics,) in standardised topics."""
        mean, std = np.asarray(self.corpus_profile), np.asarray(self.topic_std)
        centres = (np.asarray([self.category_profiles[name] for name in self.categories]) - mean) / std
        distances = np.linalg.norm(centres - (profile - mean) / std, axis=1)
        return self.categories[int(np.argmin(distances))]

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (checkpoints carry it): every field."""
        return {**asdict(self), "categories": list(self.categories), "year_bin_edges": list(self.year_bin_edges)}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> MetadataEncoder:
        """The encoder of :meth:`to_dict`; a payload from before topic inputs reads as ``inputs="category"``."""
        keys = payload.get("topic_keys")
        return cls(
            categories=list(payload["categories"]),
            year_bin_edges=list(payload["year_bin_edges"]),
            stats=dict(payload["stats"]),
            inputs=str(payload.get("inputs", "category")),
            topic_columns=list(payload.get("topic_columns", [])),
            corpus_profile=list(payload.get("corpus_profile", [])),
            topic_std=list(payload.get("topic_std", [])),
            category_profiles={name: list(p) for name, p in payload.get("category_profiles", {}).items()},
            topic_keys=None if keys is None else [list(words) for words in keys],
        )


def meta_batches(
    meta: Mapping[str, torch.Tensor], batch_size: int, n: int | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """The first ``n`` rows (default: all) of a metadata dict, in consecutive batches of at most ``batch_size``.

    Parameters
    ----------
    meta : mapping of str to Tensor
        A split's metadata (``NeurosynthDataModule.meta[split]``): ``cond`` (N, cond_dim) and the
        other fields, one row per study.
    batch_size : int
    n : int, optional

    Yields
    ------
    dict of str to Tensor
        The same keys, ``batch_size`` rows each (fewer in the last batch).
    """
    total = len(meta["cond"]) if n is None else min(n, len(meta["cond"]))
    for start in range(0, total, batch_size):
        yield {key: value[start : min(start + batch_size, total)] for key, value in meta.items()}


def task_categories(params: Params) -> list[str]:
    """Category names in one-hot order: the mapping's categories, sorted, then ``other``."""
    return sorted(params["curation"]["task_categories"]) + ["other"]
