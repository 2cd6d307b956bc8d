"""The Discovery Platform: clusters, hierarchy, Zeitgeist timeline and downloads, read from the stages' outputs.

Nothing here runs a model: every panel reads what a stage wrote under
``data/results/<profile>/`` (stage 05 ``hierarchical/``, stage 07 ``clustering/``,
stage 08 ``forecasting/``) and ``data/release/<profile>/`` (stage 10). A panel
whose stage has not run says so and names the files it looked for.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd

from sematlas.core.grid import Grid
from sematlas.core.io import read_json
from sematlas.core.paths import ProfilePaths
from sematlas.pipeline.registry import writer
from sematlas.widgets.common import Stopwatch, profile_voxel_size
from sematlas.widgets.display import MapRow, SliceRenderer, download_link, file_download_link, peak_voxel

#: Files offered for download (a release folder's, else the results').
DOWNLOADABLE = ("*.nii.gz", "*.csv", "*.parquet", "*.json", "*.onnx", "*.md", "SHA256SUMS")
_DRIFT = re.compile(r"drift_(?P<task>.+)_(?P<year>\d{4})_mean\.nii\.gz")
#: Members listed per cluster.
MEMBER_ROWS = 50


def _missing(output: str, files: list[Path]) -> w.HTML:
    """Say that the stage writing ``output`` (``results/clustering``, ``release``) has not run, and what is missing."""
    stage = writer(output)
    listed = ", ".join(f"<code>{html.escape(str(f))}</code>" for f in files)
    return w.HTML(f"<i>Stage {stage.number} ({stage.name}) has not been run for this profile: {listed} not found.</i>")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


class DiscoveryPlatform:
    """Browse what the analysis stages found, and download the maps and tables.

    Parameters
    ----------
    results : Path
        ``data/results/<profile>``.
    release : Path, optional
        ``data/release/<profile>`` (downloads); the results folder is offered when it is absent.
    grid : Grid
        The grid of the NIfTI maps.
    studies : DataFrame, optional
        ``id`` and ``title`` of the studies, to name cluster members.
    root : Path, optional
        Project root, to show paths relative to it.
    """

    def __init__(
        self,
        results: Path,
        release: Path | None,
        grid: Grid,
        studies: pd.DataFrame | None = None,
        root: Path | None = None,
    ) -> None:
        self.results, self.release, self.root = Path(results), release, root
        self.renderer = SliceRenderer(grid)
        self.titles = (
            dict(zip(studies["id"].astype(str), studies["title"])) if studies is not None else dict[str, str]()
        )
        self.stopwatch = Stopwatch()
        tabs = {
            "Clusters": self._cluster_panel(),
            "Hierarchy": self._hierarchy_panel(),
            "Zeitgeist": self._zeitgeist_panel(),
            "Downloads": self._download_panel(),
        }
        header = w.HTML(
            f"<b>Discovery Platform</b>: results of profile <b>{html.escape(self.results.name)}</b> "
            f"from <code>{html.escape(self._relative(self.results))}</code>"
        )
        self.tabs = w.Tab(children=list(tabs.values()))
        for k, title in enumerate(tabs):
            self.tabs.set_title(k, title)
        self.widget = w.VBox([header, self.tabs])

    @classmethod
    def from_profile(cls, profile: str) -> DiscoveryPlatform:
        """The platform on a profile's results and release folders."""
        paths = ProfilePaths.for_profile(profile)
        studies_path = paths.processed / "studies.parquet"
        studies = pd.read_parquet(studies_path, columns=["id", "title"]) if studies_path.is_file() else None
        release = paths.release if paths.release.is_dir() else None
        return cls(paths.results, release, Grid(profile_voxel_size(profile)), studies, root=paths.root)

    def _relative(self, path: Path) -> str:
        if self.root is not None and path.is_relative_to(self.root):
            return str(path.relative_to(self.root))
        return str(path)

    # ------------------------------------------------------------------ clusters
    def _cluster_panel(self) -> w.Widget:
        folder = self.results / "clustering"
        needed = [folder / "clusters.parquet", folder / "assignments.parquet"]
        if not all(p.is_file() for p in needed):
            self.clusters = self.assignments = None
            return _missing("results/clustering", needed)
        self.clusters = pd.read_parquet(needed[0])
        self.assignments = pd.read_parquet(needed[1]).assign(id=lambda a: a["id"].astype(str))
        options = [(str(row.name), int(row.cluster)) for row in self.clusters.itertuples()]
        self.cluster = w.Dropdown(options=options, description="Cluster")
        self.cluster.add_class("sematlas-cluster")
        self.cluster_image = w.Image(format="png")
        self.cluster_info = w.HTML()
        self.cluster_members = w.HTML()
        self.cluster_download = w.HTML()
        self.cluster_3d = w.Checkbox(description="interactive 3-D view of the centroid", indent=False)
        self.cluster_view = w.HTML()
        self.cluster.observe(lambda _: self.select_cluster(self.cluster.value), names="value")
        self.cluster_3d.observe(lambda _: self._update_cluster_3d(), names="value")
        summary = read_json(folder / "results.json") if (folder / "results.json").is_file() else {}
        noise = summary.get("noise_fraction")
        caption = f"{len(self.clusters)} clusters of {summary.get('n_studies', len(self.assignments))} studies" + (
            f"; {noise:.0%} left unclustered (noise)" if noise is not None else ""
        )
        if options:
            self.select_cluster(options[0][1])
        return w.VBox(
            [
                w.HTML(f"<small>{html.escape(caption)}</small>"),
                self.cluster,
                w.HBox([self.cluster_image, w.VBox([self.cluster_info, self.cluster_download, self.cluster_3d])]),
                self.cluster_view,
                self.cluster_members,
            ]
        )

    def centroid_path(self, cluster: int) -> Path:
        return self.results / "clustering" / f"centroid_{cluster}.nii.gz"

    def members(self, cluster: int) -> pd.DataFrame:
        """Studies assigned to ``cluster``, most confident first, with their titles when known."""
        if self.assignments is None:
            raise FileNotFoundError(
                f"no clustering results (stage {writer('results/clustering').number}) for this profile"
            )
        table = self.assignments.loc[self.assignments["cluster"] == cluster]
        table = table.sort_values(["probability", "id"], ascending=[False, True]).reset_index(drop=True)
        if self.titles:
            table = table.assign(title=table["id"].map(self.titles))
        return table

    def select_cluster(self, cluster: int) -> None:
        """Show a cluster: centroid map, top topics and tasks, members."""
        if self.cluster.value != cluster:
            self.cluster.value = cluster  # comes back here through the observer
            return
        if self.clusters is None:
            return
        row = self.clusters.set_index("cluster").loc[cluster]
        path = self.centroid_path(cluster)
        with self.stopwatch:
            if path.is_file():
                volume = np.asarray(nib.nifti1.load(path).get_fdata(), dtype=np.float32)
                self.cluster_image.value = self.renderer.render(
                    [MapRow(volume, f"{row['name']}: decoded centroid")], cut=peak_voxel(volume)
                )
                self.cluster_download.value = file_download_link(path, self.root)
            else:
                self.cluster_image.value = b""
                self.cluster_download.value = f"<i>no centroid map at {html.escape(str(path))}</i>"
        topics = "".join(
            f"<li>{html.escape(str(t))} (lift {lift:.1f})</li>"
            for t, lift in zip(row.get("top_topics", []), row.get("top_topic_lifts", []))
        )
        shares = zip(row.get("top_tasks", []), row.get("top_task_shares", []))
        tasks = ", ".join(f"{html.escape(str(t))} {share:.0%}" for t, share in shares)
        self.cluster_info.value = (
            f"<b>{html.escape(str(row['name']))}</b>: {int(row['size'])} studies<br>"
            f"top topics:<ul>{topics}</ul>tasks: {tasks}"
        )
        members = self.members(cluster)
        shown = members.head(MEMBER_ROWS)
        self.cluster_members.value = (
            f"<b>members</b> ({len(members)}{', first ' + str(MEMBER_ROWS) if len(members) > MEMBER_ROWS else ''})"
            + shown.to_html(index=False, classes="sematlas-members", escape=True, float_format="{:.2f}".format)
        )
        self._update_cluster_3d()

    def _update_cluster_3d(self) -> None:
        if not self.cluster_3d.value or not self.centroid_path(self.cluster.value).is_file():
            self.cluster_view.value = ""
            return
        from nilearn.plotting import view_img

        view = view_img(str(self.centroid_path(self.cluster.value)), threshold="90%", symmetric_cmap=False)
        self.cluster_view.value = view.get_iframe(width=720, height=300)

    # ------------------------------------------------------------------ hierarchy
    def _hierarchy_panel(self) -> w.Widget:
        from sematlas.reporting.hierarchy import plot_hierarchy

        path = self.results / "hierarchical" / "results.json"
        summary = read_json(path) if path.is_file() else {}
        if "hierarchy" not in summary:
            return _missing("results/hierarchical", [path])
        hierarchy = summary["hierarchy"]
        correlation = np.asarray(hierarchy["top_lower_abs_correlation"], dtype=float)
        profile = pd.DataFrame.from_dict(hierarchy["category_profile"], orient="index").sort_index()
        gate = summary.get("gate", {})
        verdict = (
            f"stage gate: <b>{html.escape(str(gate.get('result', '?')))}</b> "
            f"({gate.get('passed', '?')} of {len(gate.get('criteria', {}))} criteria passed)"
            if gate
            else ""
        )
        return w.VBox([w.HTML(verdict), w.Image(value=_png(plot_hierarchy(correlation, profile)), format="png")])

    # ------------------------------------------------------------------ Zeitgeist
    def _zeitgeist_panel(self) -> w.Widget:
        folder = self.results / "forecasting"
        series_path = folder / "yearly_series.parquet"
        if not series_path.is_file():
            self.year = None
            return _missing("results/forecasting", [series_path])
        series = pd.read_parquet(series_path)
        counts = series.loc[series["group"] == "all"].set_index("year")["n"].astype(int)
        self.year_counts = counts
        self.drift = {
            int(m["year"]): (m["task"], path)
            for path in sorted(folder.glob("drift_*_mean.nii.gz"))
            if (m := _DRIFT.fullmatch(path.name))
        }
        frechet_path = folder / "frechet_by_year.parquet"
        self.frechet = pd.read_parquet(frechet_path) if frechet_path.is_file() else None
        prevalence = None
        if self.assignments is not None and self.clusters is not None:
            from sematlas.analysis.forecasting import cluster_prevalence

            names = dict(zip(self.clusters["cluster"], self.clusters["name"]))
            prevalence = cluster_prevalence(self.assignments, names)
        self._timeline = self._timeline_figure(counts, prevalence)
        self.year = w.IntSlider(
            value=int(counts.index.max()), min=int(counts.index.min()), max=int(counts.index.max()), description="Year"
        )
        self.year.continuous_update = False
        self.year.add_class("sematlas-year")
        self.timeline_image = w.Image(format="png")
        self.drift_image = w.Image(format="png")
        self.year_info = w.HTML()
        self.year.observe(lambda _: self.set_year(self.year.value), names="value")
        self.set_year(self.year.value)
        return w.VBox([self.year, self.timeline_image, w.HBox([self.drift_image, self.year_info])])

    @staticmethod
    def _timeline_figure(counts: pd.Series, prevalence: pd.DataFrame | None) -> tuple[Any, list[Any]]:
        fig, axes = plt.subplots(
            2 if prevalence is not None else 1, 1, figsize=(8, 4.2 if prevalence is not None else 2.2), squeeze=False
        )
        ax = axes[0, 0]
        ax.bar(counts.index, counts.to_numpy(), color="tab:blue")
        ax.set(ylabel="studies", title="studies per publication year")
        if prevalence is not None:
            cluster_ax = axes[1, 0]
            colours = [
                "lightgrey" if name == "noise" else plt.get_cmap("tab10")(k % 10)
                for k, name in enumerate(prevalence.columns)
            ]
            cluster_ax.stackplot(prevalence.index, prevalence.T.to_numpy(), labels=prevalence.columns, colors=colours)
            cluster_ax.set(
                ylim=(0, 1), ylabel="share", title=f"cluster prevalence (stage {writer('results/clustering').number})"
            )
            cluster_ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        markers = [a.axvline(counts.index.max(), color="black", lw=1.5) for a in axes[:, 0]]
        fig.tight_layout()
        return fig, markers

    def set_year(self, year: int) -> None:
        """Move the Zeitgeist timeline to ``year``: marker, drift map of the nearest modelled year, Fréchet scores."""
        if self.year is None:
            raise FileNotFoundError(
                f"no forecasting results (stage {writer('results/forecasting').number}) for this profile"
            )
        if self.year.value != year:
            self.year.value = year  # comes back here through the observer
            return
        fig, markers = self._timeline
        for marker in markers:
            marker.set_xdata([year, year])
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        self.timeline_image.value = buffer.getvalue()
        lines = [f"<b>{year}</b>: {int(self.year_counts.get(year, 0))} studies in the profile"]
        if self.drift:
            nearest = min(self.drift, key=lambda y: (abs(y - year), y))
            task, path = self.drift[nearest]
            volume = np.asarray(nib.nifti1.load(path).get_fdata(), dtype=np.float32)
            title = f"predicted '{task}' map for {nearest} (mean over prior draws)"
            self.drift_image.value = self.renderer.render([MapRow(volume, title)])
            lines.append(f"drift map: nearest modelled year {nearest} ({file_download_link(path, self.root)})")
        if self.frechet is not None and year in set(self.frechet["year"]):
            scores = self.frechet.loc[self.frechet["year"] == year, ["method", "frechet"]]
            lines.append("held-out year, Fréchet distance to the observed latents:")
            lines.append(scores.to_html(index=False, float_format="{:.3f}".format))
        self.year_info.value = "<br>".join(lines)

    # ------------------------------------------------------------------ downloads
    def downloadable(self) -> list[Path]:
        """Files offered for download: the release folder's, else the results folder's."""
        folder = self.release if self.release is not None else self.results
        return sorted({p for pattern in DOWNLOADABLE for p in folder.rglob(pattern) if p.is_file()})

    def _download_panel(self) -> w.Widget:
        files = self.downloadable()
        if not files:
            return _missing("release", [self.release or self.results])
        source = (
            "release"
            if self.release is not None
            else f"results (no release folder yet: run stage {writer('release').number})"
        )
        self.files = w.Select(
            options=[(f"{self._relative(p)} ({p.stat().st_size / 1024:,.0f} KiB)", p) for p in files],
            rows=12,
            layout=w.Layout(width="95%"),
        )
        button = w.Button(description="Prepare download", icon="download")
        self.file_link = w.HTML()
        button.on_click(lambda _: self.prepare_download(self.files.value))
        caption = w.HTML(f"<small>{len(files)} files from the {html.escape(source)}</small>")
        return w.VBox([caption, self.files, button, self.file_link])

    def prepare_download(self, path: Path) -> str:
        """Put a download link to ``path`` under the file list and return it."""
        self.file_link.value = download_link(path.read_bytes(), path.name, label=f"download {path.name}")
        return self.file_link.value
