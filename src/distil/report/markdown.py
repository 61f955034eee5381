"""report.md of a run: what was trained on what, the side-by-side table, the figures and the recipe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from distil.report.rundata import RunData
from distil.report.synthetic import SyntheticGrids
from distil.report.tables import metrics_markdown

# The figures of a run report, in the order shown: file stem -> caption.
FIGURES: dict[str, str] = {
    "training_curves": "Training loss and evaluation accuracy per epoch",
    "accuracy_vs_size": "Accuracy vs weights size (every model of the run)",
    "accuracy_vs_latency": "Accuracy vs latency at batch size 1",
    "per_class_accuracy": "Per-class test accuracy: teacher vs students",
}


# What a model's outputs are, for the tasks whose outputs are not classes (`distil.data.targets`).
OUTPUT_UNITS = {
    "multilabel": "labels (multilabel)",
    "regression": "target columns (regression)",
    "embedding": "embedding dimensions (embedding)",
    "dense": "classes per pixel (dense)",
}
# What agreement measures, for the tasks where it is not the share of equal top-1 predictions.
AGREEMENT = {
    "multilabel": "share of (sample, label) decisions equal to the reference's",
    "regression": "R² of the model's outputs to the reference's",
    "embedding": "share of the reference's 10 nearest neighbours (cosine) that the model's 10 recover",
    "dense": "share of labelled pixels whose top-1 class is the reference's",
}


def data_line(data: Mapping[str, object]) -> str:
    """One sentence on the dataset: name, source and split sizes."""
    sizes = data.get("sizes")
    parts = [f"dataset **{data.get('name', '?')}**"]
    extra = data.get("extra") if isinstance(data.get("extra"), Mapping) else {}
    assert isinstance(extra, Mapping)
    tokens = "vocab_size" in extra  # token data: blocks of a corpus, not classified samples
    if isinstance(sizes, Mapping):
        unit = f" blocks of {extra.get('block_size', '?')} tokens" if tokens else " samples"
        parts.append(", ".join(f"{k} {v}" for k, v in sizes.items()) + unit)
    if tokens:
        parts.append(f"tokenizer {extra.get('tokenizer', '?')} (vocabulary {extra['vocab_size']})")
    elif data.get("task") in OUTPUT_UNITS:
        parts.append(f"{data.get('num_classes')} {OUTPUT_UNITS[str(data['task'])]}")
    elif data.get("num_classes"):
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


def training_markdown(training: Mapping[str, Mapping[str, float]]) -> str:
    """Mean training throughput per stage (samples/s; tokens/s for token data) as a Markdown table."""
    tokens = any("tokens_per_s" in v for v in training.values())
    head = "| stage | samples/s |" + (" tokens/s |" if tokens else "")
    lines = [head, "|---|---|" + ("---|" if tokens else "")]
    for stage, v in training.items():
        row = f"| {stage} | {v.get('samples_per_s', float('nan')):,.1f} |"
        if tokens:
            row += f" {v.get('tokens_per_s', float('nan')):,.0f} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def answer_cell(answer: str, correct: bool) -> str:
    """A model's answer with a check mark (right) or a cross (wrong); "(empty)" for no answer."""
    return f"{answer or '(empty)'} {'✓' if correct else '✗'}"


def problem_rows(problems: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the sample problems table: prompt, gold answer, each model's answer."""
    names = list(problems[0].get("answers", {})) if problems else []
    rows = [
        [
            str(p["prompt"]),
            str(p["gold"]),
            *(answer_cell(str(p["answers"][n]), bool(p["correct"][n])) for n in names),
        ]
        for p in problems
    ]
    return ["problem", "answer", *names], rows


def problems_markdown(problems: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sample held-out problems with every model's greedy answer, marked right or wrong."""
    if not problems:
        return []
    head, rows = problem_rows(problems)
    out = [
        "Held-out problems, greedy answers (✓ right, ✗ wrong); exact match over the whole test set is in the "
        "table above.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return [*out, ""]


def generation_markdown(generation: Mapping[str, Any]) -> list[str]:
    """Decode latency per token (KV cache, batch 1) and greedy samples from fixed test prompts."""
    out: list[str] = []
    latency = generation.get("latency") or {}
    if latency:
        out += [
            f"Greedy decoding with the KV cache, batch 1, after a prompt of {generation.get('prompt_tokens')} "
            "tokens: median milliseconds per new token, every model timed by the same code in one process.",
            "",
            "| model | ms/token | prefill ms | threads |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {name} | {v['ms_per_token']:.3f} | {v['prefill_ms']:.3f} | {v['threads']} |"
            for name, v in latency.items()
        ]
        out.append("")
    out += problems_markdown(generation.get("problems") or [])
    prompts = generation.get("prompts") or []
    samples = generation.get("samples") or {}
    for i, prompt in enumerate(prompts):
        out += [f"**Prompt {i + 1}** (the start of a held-out block):", "", "```text", prompt, "```", ""]
        for name, texts in samples.items():
            if i < len(texts):
                out += [
                    f"{name}, greedy, {generation.get('new_tokens')} tokens:",
                    "",
                    "```text",
                    texts[i],
                    "```",
                    "",
                ]
    return out


def synthetic_markdown(synthetic: SyntheticGrids) -> list[str]:
    """The "Synthetic transfer set" section: what made the set, and a linked grid per class.

    Args:
        synthetic: the set, its grid paths relative to the report (`SyntheticGrids.relative_to`).
    """
    lines = ["## Synthetic transfer set", "", synthetic.summary(), ""]
    for name, path in synthetic.grids.items():
        lines += [f"**{name}**", "", f"![{name}: synthetic inputs]({path.as_posix()})", ""]
    if not synthetic.grids:
        lines += ["(no grids: the set's inputs are not images)", ""]
    return lines


def run_markdown(run: RunData, figures: Mapping[str, str], synthetic: SyntheticGrids | None = None) -> str:
    """The Markdown report of a run.

    Args:
        run: the run's data.
        figures: figure stem -> path of its PNG relative to the report (only these are linked).
        synthetic: the synthetic transfer set the students trained on, with grid paths relative to the
            report (None: the section is left out).

    Returns:
        The Markdown text.
    """
    n_test = run.data.get("sizes", {}).get("test") if isinstance(run.data.get("sizes"), dict) else None
    title = f"{run.recipe_name}: {run.test_title}" + (f" ({n_test} samples)" if n_test else "")
    out = [f"# {title}", "", f"Run directory `{run.name}`; {data_line(run.data)}", ""]
    out += [
        "## Models side by side",
        "",
        f"Ratios are against `{run.reference.name}`: compression = its stored size / the model's "
        "(with the parameter ratio in brackets where that differs, e.g. for int8); "
        "speed-up = its latency / the model's; agreement = "
        + AGREEMENT.get(
            run.reference.task, "share of test samples where the model's top-1 matches the reference's"
        )
        + ".",
        "",
        metrics_markdown(run.metrics, run.reference),
    ]
    for stem, caption in FIGURES.items():
        if stem in figures:
            out += [f"## {caption}", "", f"![{caption}]({figures[stem]})", ""]
    if synthetic is not None:
        out += synthetic_markdown(synthetic)
    if run.per_class:
        out += ["## Per-class accuracy", "", per_class_markdown(run.class_names, run.per_class)]
    if run.training:
        out += ["## Training throughput", "", training_markdown(run.training)]
    if run.generation.get("latency") or run.generation.get("samples") or run.generation.get("problems"):
        out += ["## Generation", "", *generation_markdown(run.generation)]
    if run.recipe_yaml:
        out += ["## Resolved recipe", "", "```yaml", run.recipe_yaml.rstrip(), "```", ""]
    return "\n".join(out)
