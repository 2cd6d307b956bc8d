"""``sematlas generate``: a brain map from a query, written as NIfTI.

The query is what a study is about, in one of three ways (as
:meth:`sematlas.core.metadata.MetadataEncoder.request` reads it): free text matched to
the topics' key words, a task category (``--task``) or topic weights (``--topics``).
The atlas decodes the mean of its prior ``p(z | m)`` for that request
(:meth:`~sematlas.inference.atlas.AtlasModel.generate`), or averages ``--samples``
prior samples; ``--sd`` adds the voxel-wise standard deviation over prior samples
(:meth:`~sematlas.inference.atlas.AtlasModel.generate_spread`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sematlas.cli.common import CliError, echo, output_path, profile_paths, stage_command

if TYPE_CHECKING:
    from nibabel import Nifti1Image

    from sematlas.inference.atlas import AtlasModel

logger = logging.getLogger(__name__)

#: Prior samples of the spread map when ``--sd`` is given without ``--samples``.
DEFAULT_SPREAD_SAMPLES = 32
#: Topics the printout lists, and key words per topic.
_N_TOPICS_SHOWN = 5
_N_KEY_WORDS = 5

DESCRIPTION = (
    "Write the atlas's map for a query as NIfTI (MNI152). The query says what a study is about: "
    "free text (QUERY words, matched to the topics' key words), a task category (--task) or topic "
    "weights (--topics). The map decodes the mean of the atlas's prior for that query (or averages "
    "--samples prior samples); --sd also writes the voxel-wise standard deviation over prior samples. "
    "The command prints the checkpoint, the files and the topic profile the query became."
)

EXAMPLE = """example:
  sematlas generate working memory --year 2012 -o wm.nii.gz --sd wm_sd.nii.gz
  sematlas generate --task pain -o pain.nii.gz
  sematlas generate --topics 7=1,32=0.5 --sample-size 24 -o mix.nii.gz"""


def add_parser(sub: Any) -> None:
    """Register ``generate`` on the subparsers ``sub`` of the ``sematlas`` parser."""
    parser = sub.add_parser(
        "generate",
        help="write the atlas's map for a query as NIfTI",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("query", nargs="*", metavar="QUERY", help="free text, matched to the topics' key words")
    parser.add_argument("--task", metavar="NAME", help="a task category instead of text (e.g. working_memory)")
    parser.add_argument(
        "--topics", metavar="IDX=W,...", help="topic weights instead of text: index or column (topic_07) = weight"
    )
    parser.add_argument(
        "--year", type=int, metavar="Y", help="publication year, 1997-2018 (default: the training mean)"
    )
    parser.add_argument("--sample-size", type=int, metavar="N", help="participants (default: left to the model)")
    parser.add_argument("--peaks", type=int, metavar="N", help="reported peaks (default: the training geometric mean)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz", help="the map to write")
    parser.add_argument("--sd", metavar="SD.nii.gz", help="also write the voxel-wise SD over prior samples")
    parser.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="N",
        help=f"prior samples: the map averages N of them (0, the default: the prior mean); "
        f"the SD map uses N (default {DEFAULT_SPREAD_SAMPLES})",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the prior samples (default 0)")
    parser.add_argument("--profile", default="quick", help="profile whose main model to use (default quick)")
    parser.add_argument("--checkpoint", metavar="PATH", help="a checkpoint instead of the profile's main model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Generate the map(s) of ``args`` and write them; nothing is written when anything fails.

    Raises
    ------
    CliError
        Any bad input: the request, the options, the paths or the checkpoint.
    """
    request = _request(args)
    output = output_path(args.output, ".nii.gz", "-o")
    sd_path = output_path(args.sd, ".nii.gz", "--sd") if args.sd else None
    if sd_path is not None and sd_path.resolve() == output.resolve():
        raise CliError(f"--sd {sd_path} is the map's own file (-o); give another name")
    if args.samples < 0 or args.samples == 1:
        raise CliError(f"--samples must be 0 (the prior mean) or 2 or more, got {args.samples}")
    checkpoint = _checkpoint(args)
    atlas = _load(checkpoint)
    try:
        encoded = atlas.encoder.request(request)
    except ValueError as error:
        raise CliError(str(error)) from error
    logger.debug("request %s encoded as %s", request, encoded["cond"].tolist())
    images: list[tuple[Path, Nifti1Image]] = []
    if sd_path is None:
        images.append((output, atlas.to_nifti(atlas.generate(request, n_samples=args.samples, seed=args.seed)[0])))
    else:
        # generate() with samples is the mean of these same samples: draw them once.
        mean, sd = atlas.generate_spread(request, args.samples or DEFAULT_SPREAD_SAMPLES, args.seed)
        if not args.samples:
            mean = atlas.generate(request, seed=args.seed)
        images += [(output, atlas.to_nifti(mean[0])), (sd_path, atlas.to_nifti(sd[0]))]
    _write(images)
    echo(_summary(atlas, checkpoint, encoded, args, [path for path, _ in images]))


def _request(args: argparse.Namespace) -> dict[str, Any]:
    """The request of the options: exactly one of text / task / topics, then year, sample size, peaks."""
    given = [name for name, value in (("QUERY", args.query), ("--task", args.task), ("--topics", args.topics)) if value]
    if len(given) != 1:
        found = f"got {' and '.join(given)}" if given else "got none"
        raise CliError(f"give exactly one of QUERY words, --task or --topics; {found}")
    request: dict[str, Any]
    if args.query:
        request = {"text": " ".join(args.query)}
    elif args.task:
        request = {"task": args.task}
    else:
        request = {"topics": _parse_topics(args.topics)}
    for key, value in (("year", args.year), ("sample_size", args.sample_size), ("n_peaks", args.peaks)):
        if value is not None:
            request[key] = value
    return request


def _parse_topics(text: str) -> dict[int | str, float]:
    """``"7=1,topic_32=0.5"`` -> ``{7: 1.0, "topic_32": 0.5}`` (an index, a column or a topic name = a weight)."""
    weights: dict[int | str, float] = {}
    for item in text.split(","):
        topic, sep, weight = item.partition("=")
        topic = topic.strip()
        if not sep or not topic:
            raise CliError(f"--topics {text!r}: {item.strip()!r} is not TOPIC=WEIGHT (e.g. --topics 7=1,32=0.5)")
        try:
            value = float(weight)
        except ValueError:
            raise CliError(f"--topics {text!r}: the weight of {topic!r} is not a number: {weight.strip()!r}") from None
        key: int | str = int(topic) if topic.isdigit() else topic
        if key in weights:
            raise CliError(f"--topics {text!r}: topic {topic!r} is given twice")
        weights[key] = value
    return weights


def _checkpoint(args: argparse.Namespace) -> Path:
    """``--checkpoint``, or the profile's main model (stage 02's best checkpoint); it must exist."""
    from sematlas.training.ensemble import main_checkpoint

    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        if not checkpoint.is_file():
            raise CliError(f"--checkpoint {checkpoint}: no such file")
        return checkpoint
    checkpoint = main_checkpoint(profile_paths(args.profile))
    if not checkpoint.is_file():
        raise CliError(
            f"profile '{args.profile}' has no trained atlas ({checkpoint} is missing); "
            f"train it with {stage_command(args.profile, '02')}, or pass --checkpoint"
        )
    return checkpoint


def _load(checkpoint: Path) -> AtlasModel:
    """The atlas of ``checkpoint``; a file that is no sematlas checkpoint is a :class:`CliError`."""
    import pickle

    from sematlas.core.errors import CheckpointError
    from sematlas.inference.atlas import AtlasModel

    try:
        return AtlasModel.load(checkpoint)
    except CheckpointError as error:
        raise CliError(str(error)) from error
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as error:
        raise CliError(
            f"{checkpoint} is not a readable sematlas checkpoint ({type(error).__name__}: {error})"
        ) from error


def _write(images: list[tuple[Path, Nifti1Image]]) -> None:
    """Write each ``(path, image)`` atomically; when one fails, remove those already written."""
    from sematlas.core.io import write_nifti

    written: list[Path] = []
    try:
        for path, image in images:
            written.append(write_nifti(image, path))
    except OSError as error:
        for path in written:
            path.unlink(missing_ok=True)
        raise CliError(f"cannot write {images[len(written)][0]}: {error}") from error


def _summary(
    atlas: AtlasModel, checkpoint: Path, encoded: dict[str, Any], args: argparse.Namespace, paths: list[Path]
) -> str:
    """The printout: checkpoint, files written, and the topic profile the query became."""
    encoder = atlas.encoder
    task = encoder.categories[int(encoded["task"][0])]
    how = f"mean of {args.samples} prior samples" if args.samples else "prior mean"
    lines = [
        f"checkpoint  {checkpoint} ({atlas.variant}, profile '{atlas.payload.get('profile', '?')}')",
        f"map         {paths[0]} ({how}, seed {args.seed})" if args.samples else f"map         {paths[0]} ({how})",
    ]
    if len(paths) > 1:
        lines.append(
            f"sd map      {paths[1]} ({args.samples or DEFAULT_SPREAD_SAMPLES} prior samples, seed {args.seed})"
        )
    lines.append(f"nearest task category: {task}")
    if encoder.inputs != "topics":
        lines.append("this atlas reads task categories, not topics: the query is the category's one-hot")
        return "\n".join(lines)
    std, corpus = np.asarray(encoder.topic_std), np.asarray(encoder.corpus_profile)
    profile = encoded["cond"][0, : encoder.n_topics].double().cpu().numpy() * std + corpus
    order = [i for i in np.argsort(corpus - profile, kind="stable")[:_N_TOPICS_SHOWN] if profile[i] > corpus[i]]
    lines.append("topic profile (the topics the query raises most above the corpus mean):")
    for index in order:
        words = " ".join(encoder.topic_keys[index][:_N_KEY_WORDS]) if encoder.topic_keys else ""
        lines.append(
            f"  {encoder.topic_columns[index]:<9} {profile[index]:.3f} (corpus {corpus[index]:.3f})  {words}".rstrip()
        )
    return "\n".join(lines)
