"""`distil report RUN_DIR`: report.md, a self-contained report.html and PNG figures for a finished run."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import check_out, console, user_errors


@user_errors
def report(
    run_dir: Annotated[str, typer.Argument(help="A run directory (the one holding summary.json).")],
    out: Annotated[
        str | None, typer.Option("--out", help="Write the report here instead of into the run directory.")
    ] = None,
) -> None:
    """Write report.md, report.html (tables and figures, one self-contained file) and plots/*.png for a run.

    The figures: training curves of teacher and students, accuracy vs size and vs latency (Pareto
    charts), and per-class accuracy of teacher vs students. Runs write this report themselves; use this
    command to rebuild it, or to write it elsewhere.

    Example: distil report runs/digits-demo-20261127-183000
    """
    # Imported here: matplotlib is slow to import, and `distil --help` should stay fast.
    from distil.report.rundata import load_run
    from distil.report.tables import metrics_table
    from distil.report.writer import write_report

    run = load_run(run_dir)
    check_out(out or run_dir)
    files = write_report(run_dir, out)
    console.print(metrics_table(run.metrics, run.reference, title=f"{run.recipe_name}: {run.name}"))
    console.print(f"wrote {files.markdown}", soft_wrap=True)
    console.print(f"wrote {files.html}  (open it in a browser: everything is embedded)", soft_wrap=True)
    for path in files.figures.values():
        console.print(f"wrote {path}", soft_wrap=True)
