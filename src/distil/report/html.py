"""Self-contained HTML reports: inline CSS, tables, and PNG figures embedded as base64 data URIs.

The page loads nothing from anywhere (no scripts, fonts or image files), so it can be mailed, attached
to a CI job or opened from an archive and still show everything.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

from distil.report.markdown import FIGURES, problem_rows
from distil.report.rundata import RunData
from distil.report.synthetic import SyntheticGrids
from distil.report.tables import columns_for, latency_notes, metric_rows

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: right; }
/* Cells wrap at spaces ("0.606 ms ±45% noisy") and model names anywhere, so that a wide table still fits
   a laptop's window without a sideways scrollbar; numbers themselves never break. */
th:first-child, td:first-child { text-align: left; overflow-wrap: anywhere; }
thead th { background: #f6f8fa; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 0.85rem; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
.note { color: #57606a; font-size: 0.9rem; }
"""


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str = "") -> str:
    """An escaped HTML table with a header row."""
    ident = f' id="{escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    # Wide tables (many columns) scroll sideways instead of overflowing the page.
    return (
        f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def notes_html(notes: Sequence[str], list_id: str) -> str:
    """Notes under a table as an escaped bullet list ("" when there are none)."""
    if not notes:
        return ""
    items = "".join(f"<li>{escape(note)}</li>" for note in notes)
    return f'<ul class="note" id="{escape(list_id)}">{items}</ul>'


def image_html(png: bytes, caption: str) -> str:
    """A figure whose PNG is embedded as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    alt = escape(caption)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'
    )


def page_html(title: str, sections: Sequence[tuple[str, str]], intro: str = "") -> str:
    """A whole HTML page: a title, an optional intro paragraph (plain text) and (heading, HTML) sections."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if intro:
        parts.append(f'<p class="note">{escape(intro)}</p>')
    for heading, body in sections:
        parts.append(f"<section><h2>{escape(heading)}</h2>{body}</section>")
    parts.append("<p class='note'>Written by distil (`distil report`).</p></body></html>")
    return "\n".join(parts) + "\n"


def synthetic_html(synthetic: SyntheticGrids) -> str:
    """The "Synthetic transfer set" section's body: what made the set, every class's grid embedded."""
    figures = "".join(
        image_html(path.read_bytes(), f"{name}: synthetic inputs") for name, path in synthetic.grids.items()
    )
    intro = f'<p class="note">{escape(synthetic.summary().replace("`", ""))}</p>'
    return intro + (figures or "<p>no grids: the set's inputs are not images</p>")


def run_html(run: RunData, figures: Mapping[str, str | Path], synthetic: SyntheticGrids | None = None) -> str:
    """The HTML report of a run, with every figure in `figures` (stem -> PNG path) embedded.

    Args:
        run: the run's data.
        figures: figure stem (see `distil.report.markdown.FIGURES`) -> PNG file to embed.
        synthetic: the synthetic transfer set the students trained on (None: the section is left out).

    Returns:
        A self-contained HTML page.
    """
    sizes = run.data.get("sizes") if isinstance(run.data.get("sizes"), dict) else {}
    title = f"{run.recipe_name}: {run.test_title}"
    intro = f"Run directory {run.name}. " + ", ".join(f"{k} {v}" for k, v in (sizes or {}).items())
    sections = [
        (
            "Models side by side",
            f'<p class="note">Ratios are against {escape(run.reference.name)} (the reference); compression '
            "is its stored size over the model's, with the parameter ratio in brackets where that differs.</p>"
            + table_html(columns_for(run.metrics), metric_rows(run.metrics, run.reference), "metrics")
            + notes_html(latency_notes(run.metrics), "latency-notes"),
        )
    ]
    for stem, caption in FIGURES.items():
        if stem in figures:
            sections.append((caption, image_html(Path(figures[stem]).read_bytes(), caption)))
    if synthetic is not None:
        sections.append(("Synthetic transfer set", synthetic_html(synthetic)))
    if run.per_class:
        names = run.class_names
        rows = []
        for i, cls in enumerate(names):
            row = [cls]
            for m in run.per_class:
                v = run.per_class[m][i] if i < len(run.per_class[m]) else float("nan")
                row.append("—" if v != v else f"{v:.1%}")
            rows.append(row)
        sections.append(("Per-class accuracy", table_html(["class", *run.per_class], rows, "per-class")))
    if run.training:
        rows = [
            [
                stage,
                f"{v.get('samples_per_s', float('nan')):,.1f}",
                f"{v.get('tokens_per_s', float('nan')):,.0f}",
            ]
            for stage, v in run.training.items()
        ]
        sections.append(
            ("Training throughput", table_html(["stage", "samples/s", "tokens/s"], rows, "training"))
        )
    generation = run.generation
    if generation.get("latency") or generation.get("samples") or generation.get("problems"):
        body = ""
        latency = generation.get("latency") or {}
        if latency:
            rows = [
                [name, f"{v['ms_per_token']:.3f}", f"{v['prefill_ms']:.3f}", str(v["threads"])]
                for name, v in latency.items()
            ]
            body += (
                '<p class="note">Greedy decoding with the KV cache, batch 1: median milliseconds per new '
                "token.</p>" + table_html(["model", "ms/token", "prefill ms", "threads"], rows, "generation")
            )
        if generation.get("problems"):
            head, rows = problem_rows(generation["problems"])
            body += '<p class="note">Held-out problems, greedy answers (✓ right, ✗ wrong).</p>' + table_html(
                head, rows, "problems"
            )
        for i, prompt in enumerate(generation.get("prompts") or []):
            body += f"<h3>Prompt {i + 1}</h3><pre>{escape(prompt)}</pre>"
            for name, texts in (generation.get("samples") or {}).items():
                if i < len(texts):
                    body += f"<p>{escape(name)}</p><pre>{escape(texts[i])}</pre>"
        sections.append(("Generation", body))
    if run.recipe_yaml:
        sections.append(("Resolved recipe", f"<pre>{escape(run.recipe_yaml)}</pre>"))
    return page_html(title, sections, intro)
