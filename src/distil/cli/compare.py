"""`distil compare RUN_DIR...`: several runs side by side, in the terminal and as compare.md/.html."""

from __future__ import annotations

from typing import Annotated

import typer

from distil.cli.common import check_out, console, user_errors


@user_errors
def compare(
    run_dirs: Annotated[list[str], typer.Argument(help="Run directories to put side by side.")],
    out: Annotated[
        str, typer.Option("--out", help="Directory for compare.md, compare.html and the plots.")
    ] = "comparison",
) -> None:
    """Put every model of several runs in one table, with accuracy-vs-size and -vs-latency charts.

    Ratios (compression, Δ accuracy) are against each run's own teacher.

    Example: distil compare runs/digits-demo-* --out runs/comparison
    """
    from distil.report.compare import compare_table, write_comparison

    check_out(out)
    runs, files = write_comparison(run_dirs, out)
    console.print(compare_table(runs))
    console.print(f"wrote {files.markdown}", soft_wrap=True)
    console.print(f"wrote {files.html}  (open it in a browser: everything is embedded)", soft_wrap=True)
