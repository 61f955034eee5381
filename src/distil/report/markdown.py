"""report.md of a run: what was trained on what, the side-by-side table, the figures and the recipe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from distil.report.rundata import RunData
from distil.report.tables import metrics_markdown

# The figures of a run report, in the order shown: file stem -> caption.
FIGURES: dict[str, str] = {
    "training_curves": "Training loss and evaluation accuracy per epoch",
    "accuracy_vs_size": "Accuracy vs weights size (every model of the run)",
    "accuracy_vs_latency": "Accuracy vs latency at batch size 1",
    "per_class_accuracy": "Per-class test accuracy: teacher vs students",
}


def data_line(data: Mapping[str, object]) -> str:
    """One sentence on the dataset: name, source and split sizes."""
    sizes = data.get("sizes")
    parts = [f"dataset **{data.get('name', '?')}**"]
    if isinstance(sizes, Mapping):
        parts.append(", ".join(f"{k} {v}" for k, v in sizes.items()) + " samples")
    if data.get("num_classes"):
        parts.append(f"{data['num_classes']} classes")
    if data.get("source"):
        parts.append(f"read from `{data['source']}`")
    return "; ".join(parts) + "."


def per_class_markdown(class_names: Sequence[str], per_class: Mapping[str, Sequence[float]]) -> str:
    """Per-class accuracy as a Markdown table: one row per class, one column per model."""
    models = list(per_class)
    lines = ["| class | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for i, cls in enumerate(class_names):
        cells = []
        for m in models:
            v = per_class[m][i] if i < len(per_class[m]) else float("nan")
            cells.append("—" if v != v else f"{v:.1%}")  # v != v: nan (class absent from the test set)
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_markdown(run: RunData, figures: Mapping[str, str]) -> str:
    """The Markdown report of a run.

    Args:
        run: the run's data.
        figures: figure stem -> path of its PNG relative to the report (only these are linked).

    Returns:
        The Markdown text.
    """
    n_test = run.data.get("sizes", {}).get("test") if isinstance(run.data.get("sizes"), dict) else None
    title = f"{run.recipe_name}: {run.data.get('name', '?')} test set" + (
        f" ({n_test} samples)" if n_test else ""
    )
    out = [f"# {title}", "", f"Run directory `{run.name}`; {data_line(run.data)}", ""]
    out += [
        "## Models side by side",
        "",
        f"Ratios are against `{run.reference.name}`: compression = its stored size / the model's "
        "(with the parameter ratio in brackets where that differs, e.g. for int8); "
        "speed-up = its latency / the model's; agreement = share of test samples where the model's top-1 "
        "matches the reference's.",
        "",
        metrics_markdown(run.metrics, run.reference),
    ]
    for stem, caption in FIGURES.items():
        if stem in figures:
            out += [f"## {caption}", "", f"![{caption}]({figures[stem]})", ""]
    if run.per_class:
        out += ["## Per-class accuracy", "", per_class_markdown(run.class_names, run.per_class)]
    if run.recipe_yaml:
        out += ["## Resolved recipe", "", "```yaml", run.recipe_yaml.rstrip(), "```", ""]
    return "\n".join(out)
