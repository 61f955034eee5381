"""Reports of a run: tables (terminal, Markdown, HTML), PNG figures, and comparisons of several runs."""

from distil.report.tables import metric_rows, metrics_markdown, metrics_table

__all__ = ["metric_rows", "metrics_markdown", "metrics_table"]
