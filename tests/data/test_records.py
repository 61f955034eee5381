"""Records of JSONL, CSV and TSV files: one reader for every text dataset, quoted fields, byte order marks
and Windows line ends, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.data.records import read_records
from distil.errors import DataError

# What Excel writes: a UTF-8 byte order mark, CRLF line ends, quotes around a text holding a comma (and
# doubled quotes inside it), a quoted line break inside a cell.
EXCEL_CSV = (
    b'\xef\xbb\xbftext,label\r\n"Cheap pills, buy now",spam\r\n'
    b'"She said ""hi""\nthen left",ham\r\n\r\nplain words,ham\r\n'
)


def test_csv_with_quoted_commas_a_bom_and_crlf_gives_the_texts_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(EXCEL_CSV)
    records = list(read_records(path))
    assert [r for _, r in records] == [
        {"text": "Cheap pills, buy now", "label": "spam"},
        {"text": 'She said "hi"\nthen left', "label": "ham"},
        {"text": "plain words", "label": "ham"},
    ]
    # a record is named by the line it starts on (the quoted line break makes the third start on line 5)
    assert [where for where, _ in records] == [f"{path}:2", f"{path}:3", f"{path}:6"]


def test_tsv_is_tab_separated_and_jsonl_loses_its_bom_too(tmp_path: Path) -> None:
    tsv = tmp_path / "d.tsv"
    tsv.write_text("prompt\tcompletion\nQ: 2+2, please?\t 4\n", encoding="utf-8")
    assert [r for _, r in read_records(tsv)] == [{"prompt": "Q: 2+2, please?", "completion": " 4"}]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b"}\r\n')
    assert [r for _, r in read_records(jsonl)] == [{"text": "a"}, {"text": "b"}]


def test_a_document_longer_than_the_csv_modules_default_field_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(f"text,label\n{'x' * 200_000},a\n", encoding="utf-8")
    assert len(next(read_records(path))[1]["text"]) == 200_000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "text,label\na,b\nc,d,e\n",
            r"bad\.csv:3 has 3 field\(s\) but the header has 2 \(\['text', 'label'\]\)",
        ),
        ("text,label\na\n", r"bad\.csv:2 has 1 field\(s\)"),
        ('text,label\n"a"b,c\n', r"bad\.csv:2 cannot be parsed as comma-separated values"),
        ("text,text\na,b\n", r"bad\.csv:1: the header row .* empty or repeated column name"),
        ("text,\na,b\n", r"bad\.csv:1: the header row"),
    ],
)
def test_malformed_rows_name_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        list(read_records(path))


def test_invalid_utf8_in_a_csv_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\ncaf\xe9,a\n")
    with pytest.raises(DataError, match=r"latin1\.csv is not valid UTF-8: byte 14"):
        list(read_records(path))
    assert next(read_records(path, errors="replace"))[1]["text"] == "caf\ufffd"
