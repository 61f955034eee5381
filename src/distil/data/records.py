"""Records of text data files: the one place that knows the file formats of labelled and prompt data.

:func:`read_records` yields ``("file:line", {field: value})`` for each record of

* ``.jsonl``: one JSON object per non-blank line (values keep their JSON types);
* ``.csv`` (comma-separated) and ``.tsv`` (tab-separated): a header row naming the columns, then one row
  per record, read by Python's :mod:`csv` module (quoted fields may hold the delimiter, quotes doubled
  ``""`` and line breaks); every value is a string. Blank rows are skipped.

Files are decoded by :func:`read_text` (strict UTF-8 unless ``errors="replace"``) and a leading UTF-8 byte
order mark (which Excel writes) is dropped, so it never becomes part of the first field's name or value.
Line ends may be LF, CRLF or CR. A malformed row (bad quoting, more or fewer fields than the header)
is a :class:`~distil.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distil.errors import DataError

RECORD_SUFFIXES = (".jsonl", ".csv", ".tsv")
"""Suffixes read as records (other files of a language-modelling corpus are one document each)."""
DELIMITERS = {".csv": ",", ".tsv": "\t"}
BOM = "\ufeff"
_FIELD_LIMIT = 2**31 - 1  # csv's default (131,072 characters) refuses long documents; C long on every OS


def is_records_file(path: Path) -> bool:
    """Whether `path` holds records (JSONL, CSV or TSV, chosen by its suffix) rather than one document."""
    return path.suffix.lower() in RECORD_SUFFIXES


def read_text(path: Path, errors: str = "strict") -> str:
    """The contents of `path` decoded as UTF-8 (a byte order mark, if any, is kept: see :func:`strip_bom`).

    Args:
        path: the file.
        errors: "strict" (invalid bytes are an error) or "replace" (they become U+FFFD).

    Raises:
        DataError: invalid UTF-8 (with the byte offset) or an unreadable file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read text file {path}: {exc}") from exc
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid UTF-8: byte {exc.start} (0x{data[exc.start]:02x}) cannot be decoded "
            f"({exc.reason}). Convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8), drop it, or read "
            "with errors='replace' to turn invalid bytes into U+FFFD."
        ) from exc


def strip_bom(text: str) -> str:
    """`text` without a leading UTF-8 byte order mark (U+FEFF), which marks an encoding, not content."""
    return text[1:] if text.startswith(BOM) else text


def read_records(path: Path, errors: str = "strict") -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", record)`` for each record of a ``.jsonl``, ``.csv`` or ``.tsv`` file (by suffix).

    Args:
        path: the file.
        errors: "strict" or "replace", for invalid UTF-8 (see :func:`read_text`).

    Raises:
        DataError: invalid UTF-8, another suffix, a JSONL line that is not a JSON object, or a CSV/TSV row
            that cannot be parsed or does not have the header's number of fields; each names the file and
            line.
    """
    suffix = path.suffix.lower()
    if suffix not in RECORD_SUFFIXES:
        raise DataError(f"{path} is not a records file; records are read from {', '.join(RECORD_SUFFIXES)}.")
    text = strip_bom(read_text(path, errors))
    if suffix == ".jsonl":
        return _jsonl_records(path, text)
    return iter(_delimited_records(path, text, DELIMITERS[suffix]))


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where} is not valid JSON ({exc.msg} at column {exc.colno}); each line of a .jsonl file "
                'must be one object such as {"text": "..."}.'
            ) from exc
        if not isinstance(record, dict):
            raise DataError(
                f"{where} holds a JSON {type(record).__name__}, not an object; each line of a .jsonl file "
                'must be one object such as {"text": "..."}.'
            )
        yield where, record


def _delimited_records(path: Path, text: str, delimiter: str) -> list[tuple[str, dict[str, str]]]:
    """The rows of a CSV/TSV file as records keyed by its header (parsed at once: csv's field size limit
    is process-wide, so it is raised only while this file is read)."""
    name = "tab" if delimiter == "\t" else "comma"
    previous = csv.field_size_limit(_FIELD_LIMIT)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        header: list[str] | None = None
        out: list[tuple[str, dict[str, str]]] = []
        line = 1
        try:
            for row in reader:
                where, line = f"{path}:{line}", reader.line_num + 1  # a row starts after the previous one
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if header is None:
                    header = _header(where, row, name)
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{where} has {len(row)} field(s) but the header has {len(header)} ({header}); a "
                        f"{name}-separated row needs one value per column. Quote values that contain the "
                        'delimiter or line breaks ("a, b"), and double quotes inside them ("").'
                    )
                out.append((where, dict(zip(header, row, strict=True))))
        except csv.Error as exc:
            raise DataError(
                f"{path}:{reader.line_num} cannot be parsed as {name}-separated values ({exc}); quote values "
                'that contain the delimiter, quotes or line breaks ("a, b"), and double quotes inside them.'
            ) from exc
        return out
    finally:
        csv.field_size_limit(previous)


def _header(where: str, row: list[str], name: str) -> list[str]:
    header = [field.strip() for field in row]
    if any(not field for field in header) or len(set(header)) != len(header):
        raise DataError(
            f"{where}: the header row {row} has an empty or repeated column name; the first row of a "
            f"{name}-separated file names each column once (e.g. text and label)."
        )
    return header


__all__ = [
    "BOM",
    "RECORD_SUFFIXES",
    "is_records_file",
    "read_records",
    "read_text",
    "strip_bom",
]
