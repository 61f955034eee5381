"""Reports of a run: tables (terminal and Markdown)."""

from distil.report.tables import metric_rows, metrics_markdown, metrics_table

__all__ = ["metric_rows", "metrics_markdown", "metrics_table"]
