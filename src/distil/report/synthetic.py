"""The "Synthetic transfer set" section of a run report: the grids of a `distil synthesize` set.

A run whose students trained on a synthetic set (the data itself, `data.name=npz` with `data.root` the
set's transfer.npz, or its unlabelled inputs, `data.unlabeled.root`) shows what they saw: one grid per
class. A set is `distil synthesize`'s when the folder of its .npz holds the synthetic.json that names it
(`distil.synth.store.write_synthetic`). The record and the grids are copied under the report's
plots/synthetic/, so the report keeps them when the set is moved or deleted; report.md links them
(`distil.report.markdown.synthetic_markdown`) and report.html embeds them (`distil.report.html.synthetic_html`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distil.fileio import atomic_write_json
from distil.report.rundata import RunData

RECORD = "synthetic.json"  # what `distil synthesize` writes next to its transfer.npz
FOLDER = "synthetic"  # under the report's plots/


@dataclass(frozen=True)
class SyntheticGrids:
    """A synthetic transfer set's record and its grids, as copied beside the report.

    Attributes:
        npz: the set's .npz as the run recorded it.
        record: its synthetic.json (method, seed, count, class names, ...).
        grids: class name -> the grid PNG under the report's plots/synthetic/, in class order.
    """

    npz: str
    record: dict[str, Any]
    grids: dict[str, Path]

    def summary(self) -> str:
        """One sentence: what made the set, how many inputs, what the grids show."""
        r = self.record
        return (
            f"The students trained on `{self.npz}`: {r.get('count', '?')} inputs made by {r.get('method', '?')} "
            f"(seed {r.get('seed', '?')}) from the teacher alone (`distil synthesize`), no real training images. "
            "Up to 16 of them per class the teacher assigns them to:"
        )

    def relative_to(self, folder: Path) -> SyntheticGrids:
        """The same grids, with paths relative to `folder` (the report's, for Markdown links)."""
        grids = {name: Path(path.relative_to(folder).as_posix()) for name, path in self.grids.items()}
        return SyntheticGrids(npz=self.npz, record=self.record, grids=grids)


def used_sets(run: RunData) -> list[str]:
    """The .npz files the run's students trained on, as recorded: the data's source and
    `data.unlabeled.root` of the resolved recipe."""
    found = []
    source = run.data.get("source")
    if isinstance(source, str) and source.endswith(".npz"):
        found.append(source)
    try:
        recipe = yaml.safe_load(run.recipe_yaml) if run.recipe_yaml else None
    except yaml.YAMLError:
        recipe = None  # a hand-edited recipe.yaml: the data's source still counts
    unlabeled = (recipe or {}).get("data", {}).get("unlabeled") if isinstance(recipe, Mapping) else None
    if isinstance(unlabeled, Mapping) and str(unlabeled.get("root", "")).endswith(".npz"):
        found.append(str(unlabeled["root"]))
    return found


def synthetic_record(npz: str | Path) -> dict[str, Any] | None:
    """The synthetic.json beside `npz` when it names `npz` as its transfer set (else None)."""
    path = Path(npz)
    record_path = path.parent / RECORD
    if not (path.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # some other tool's file of that name
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or files.get("transfer_set") != path.name:
        return None
    return dict(record)


def copy_synthetic_grids(run: RunData, plots_dir: Path) -> SyntheticGrids | None:
    """Copy the grids of the synthetic set the run trained on (if any) to `plots_dir`/synthetic/.

    When the set is no longer where the run found it, an earlier copy made for this same set is used.

    Returns:
        The set and its copied grids; None when the run trained on no `distil synthesize` set.
    """
    target = plots_dir / FOLDER
    for npz in used_sets(run):
        record = synthetic_record(npz)
        if record is not None:
            _copy(Path(npz).parent, record, npz, target)
            return _read_copy(target)
    copy = _read_copy(target)
    return copy if copy is not None and copy.npz in used_sets(run) else None


def _copy(folder: Path, record: dict[str, Any], npz: str, target: Path) -> None:
    """The set's grid PNGs and its record (with the .npz as the run recorded it) into `target`."""
    if target.exists():
        shutil.rmtree(target)  # the previous report's copy: the set may have been rewritten since
    target.mkdir(parents=True)
    grids = folder / str(record.get("files", {}).get("grids", "grids/"))
    for png in sorted(grids.glob("*.png")):
        shutil.copyfile(png, target / png.name)
    atomic_write_json(target / RECORD, {**record, "npz": npz})


def _read_copy(target: Path) -> SyntheticGrids | None:
    """The copy in `target` as `SyntheticGrids` (None when there is none)."""
    record_path = target / RECORD
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text(encoding="utf-8"))
    names = list(record.get("data", {}).get("class_names", []))
    grids: dict[str, Path] = {}
    for png in sorted(target.glob("*.png")):
        index = png.name.split("-", 1)[0]  # grids/NN-CLASS.png: NN is the class index
        name = names[int(index)] if index.isdigit() and int(index) < len(names) else png.stem
        grids[str(name)] = png
    return SyntheticGrids(npz=str(record.get("npz", "")), record=record, grids=grids)
