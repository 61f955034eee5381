"""Text classification data: labelled JSONL and the Python docs' topics as padded token rows, the errors
that name the file and line, and --trust-code reaching a Hugging Face tokenizer."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

from distil.data import load_dataset
from distil.data.text import PYTHON_DOCS_ROOT, path_fraction
from distil.data.textcls import (
    TOPICS,
    LabelledText,
    encode_rows,
    rst_paragraphs,
    split_by_text,
)
from distil.data.tokenize import ByteTokenizer
from distil.errors import ConfigError, DataError


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def labelled(n: int = 60) -> list[dict]:
    kinds = {"spam": "buy cheap pills now, limited offer number", "ham": "meeting moved to room"}
    return [{"text": f"{kinds[k]} {i}", "label": k} for i in range(n) for k in sorted(kinds)]


def test_string_labels_become_sorted_classes_and_rows_are_padded_or_truncated(tmp_path: Path) -> None:
    records = [*labelled(), {"text": "x" * 100, "label": "eggs"}]
    data = load_dataset(
        "text-classification", write_jsonl(tmp_path / "d.jsonl", records), options={"block_size": 24}
    )
    assert data.task == "classification" and data.class_names == ["eggs", "ham", "spam"]
    assert data.vocab_size == 259 and data.extra["pad_id"] == "258" and data.input_shape == (24,)
    assert not data.is_tabular and data.in_channels == 1
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == len(records) and len(data.test) > 0
    assert "1" in data.extra["truncated"] or "2" in data.extra["truncated"]
    tok = ByteTokenizer()
    rows, cut = encode_rows([LabelledText("ab", "a", "t"), LabelledText("x" * 40, "a", "t")], tok, 8)
    assert rows[0].tolist() == [tok.BOS, 97, 98] + [tok.PAD] * 5  # start, text, right padding
    assert rows[1].tolist() == [tok.BOS] + [120] * 7 and cut == 1  # truncated to the block
    # The split of a document follows its text alone (stable; duplicates never straddle splits).
    docs = [LabelledText(r["text"], r["label"], "") for r in records]
    splits = split_by_text(docs, val_fraction=0.1)
    for d in splits["test"]:
        assert path_fraction(d.text) < 0.1


def test_integer_labels_are_class_ids_and_fields_can_be_renamed(tmp_path: Path) -> None:
    records = [{"body": r["text"], "y": int(r["label"] == "spam") * 2} for r in labelled()]
    root = write_jsonl(tmp_path / "d.jsonl", records)
    data = load_dataset("text-classification", root, options={"text_field": "body", "label_field": "y"})
    assert data.class_names == ["0", "1", "2"]
    assert set(data.train.labels.tolist()) == {0, 2}
    assert data.extra["text_field"] == "body" and data.extra["label_field"] == "y"


def test_files_named_by_split_decide_the_splits(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", labelled(20))
    write_jsonl(tmp_path / "test.jsonl", labelled(3))
    data = load_dataset("text-classification", tmp_path, val_fraction=0.0)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 0, 6)
    carved = load_dataset("text-classification", tmp_path, val_fraction=0.25)
    assert len(carved.train) + len(carved.val) == 40 and len(carved.val) > 0 and len(carved.test) == 6
    write_jsonl(tmp_path / "more.jsonl", labelled(2))
    with pytest.raises(DataError, match=r"more\.jsonl is not named train, val or test"):
        load_dataset("text-classification", tmp_path)


def _excel_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    """`rows` as Excel saves a CSV: a UTF-8 byte order mark, CRLF line ends, every text quoted."""
    body = "".join('"{}",{}\r\n'.format(t.replace('"', '""'), label) for t, label in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" + header + "\r\n" + body).encode("utf-8"))
    return path


def test_csv_with_quoted_commas_a_bom_and_crlf_gives_the_right_texts_and_labels(tmp_path: Path) -> None:
    rows = [(r["text"].replace("now", "now, today"), r["label"]) for r in labelled()]
    rows[0] = ('she said "buy, now"', "spam")
    data = load_dataset("text-classification", _excel_csv(tmp_path / "d.csv", rows), val_fraction=0.0)
    assert data.class_names == ["ham", "spam"] and data.extra["text_field"] == "text"
    tok = ByteTokenizer()
    got = {
        tok.decode(x.tolist()): data.class_names[int(y)]
        for split in (data.train, data.test)
        for x, y in zip(split.x, split.labels, strict=True)  # type: ignore[attr-defined]
    }
    assert got == dict(rows)  # each text whole (its comma and quotes kept, no BOM, no CR), with its label


def test_tsv_fields_can_be_renamed_and_integer_labels_are_class_ids(tmp_path: Path) -> None:
    lines = ["id\tbody\tstars"] + [
        f"{i}\t{r['text']}\t{int(r['label'] == 'spam') * 2}" for i, r in enumerate(labelled())
    ]
    root = tmp_path / "d.tsv"
    root.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = load_dataset("text-classification", root, options={"text_field": "body", "label_field": "stars"})
    assert data.class_names == ["0", "1", "2"] and set(data.train.labels.tolist()) == {0, 2}
    with pytest.raises(
        DataError,
        match=r"d\.tsv:2 has no 'text' field \(its columns: \['body', 'id', 'stars'\]\); set data\.text_field=",
    ):
        load_dataset("text-classification", root, options={"label_field": "stars"})


def test_csv_files_named_by_split_decide_the_splits(tmp_path: Path) -> None:
    rows = [(r["text"], r["label"]) for r in labelled(10)]
    _excel_csv(tmp_path / "train.csv", rows)
    _excel_csv(tmp_path / "test.csv", rows[:4])
    data = load_dataset("text-classification", tmp_path, val_fraction=0.0)
    assert (len(data.train), len(data.val), len(data.test)) == (20, 0, 4)


def test_limit_keeps_a_stratified_subset(tmp_path: Path) -> None:
    data = load_dataset("text-classification", write_jsonl(tmp_path / "d.jsonl", labelled()), limit=10)
    assert len(data.train) == 10 and sorted(data.train.labels.tolist()) == [0] * 5 + [1] * 5


@pytest.mark.parametrize(
    ("records", "options", "message"),
    [
        (
            [{"text": "a", "label": "x"}, {"text": "b"}],
            {},
            r"d\.jsonl:2 has no 'label' field .*'text'.*data\.label_field",
        ),
        ([{"body": "a", "label": "x"}], {}, r"d\.jsonl:1 has no 'text' field .*'body'.*data\.text_field"),
        ([{"text": "a", "label": "x"}, {"text": "  ", "label": "y"}], {}, r"d\.jsonl:2: 'text' is empty"),
        ([{"text": f"t{i}", "label": "x"} for i in range(9)], {}, "at least two classes"),
        ([{"text": "a", "label": "x"}, {"text": "b", "label": 1}], {}, "mixes string and integer labels"),
        ([{"text": "a", "label": True}], {}, r"d\.jsonl:1: label True"),
        ([{"text": "a", "label": -1}, {"text": "b", "label": 0}], {}, "negative"),
    ],
)
def test_bad_records_name_the_file_line_and_fix(
    tmp_path: Path, records: list, options: dict, message: str
) -> None:
    root = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(DataError, match=message):
        load_dataset("text-classification", root, options=options)


def test_invalid_utf8_is_reported_like_text_and_replace_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    write_jsonl(path, labelled(20))
    path.write_bytes(path.read_bytes() + b'{"text": "caf\xe9 latte is nice", "label": "ham"}\n')
    with pytest.raises(DataError, match=r"not valid UTF-8: byte \d+"):
        load_dataset("text-classification", path)
    data = load_dataset("text-classification", path, options={"errors": "replace"})
    assert len(data.train) + len(data.val) + len(data.test) == 41


def test_classification_options_do_not_apply_elsewhere() -> None:
    with pytest.raises(ConfigError, match=r"data\.label_field do"):
        load_dataset("digits", options={"label_field": "y"})


def test_rst_paragraphs_keep_prose_only() -> None:
    text = (
        "Title\n=====\n\n.. function:: f(x)\n\n   Return *x* doubled; this sentence is long enough to be kept as one "
        "paragraph of prose that describes what the function does.\n\n>>> f(2)\n4\n\nshort\n\n"
        "   x = [i ** 2 for i in range(10)]  # code, mostly symbols {} () [] == != <= >= ** // %% ^^ && || @@\n"
    )
    assert rst_paragraphs(text) == [
        "Return *x* doubled; this sentence is long enough to be kept as one paragraph of prose that describes "
        "what the function does."
    ]


def _fake_docs(root: Path) -> Path:
    prose = "{}/page{}: this paragraph explains the section in enough plain words to pass the minimum length of one paragraph of prose."
    for folder in ("library", "c-api", "tutorial", "howto", "whatsnew", "reference", "distutils", "includes"):
        for i in range(12):
            body = "\n\n".join(prose.format(folder, i) + f" Part {j}." for j in range(3))
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"page{i}.rst.txt").write_text(f"Heading\n=======\n\n{body}\n")
    (root / "glossary.rst.txt").write_text(prose.format("terms", 0))
    return root


def test_python_docs_topics_label_paragraphs_by_section_and_hold_out_files(tmp_path: Path) -> None:
    data = load_dataset("python-docs-topics", _fake_docs(tmp_path / "docs"), options={"block_size": 64})
    assert data.class_names == sorted(set(TOPICS.values()))
    assert len(data.train) + len(data.val) + len(data.test) == 7 * 12 * 3  # includes/ and top-level: out
    assert data.extra["split_by"] == "files"

    def keys(split: object) -> set[str]:  # "section/page": the file each sample comes from
        tok = ByteTokenizer()
        return {tok.decode(row.tolist()).split(":")[0] for row in split.x}  # type: ignore[attr-defined]

    # a file's paragraphs stay together: no file is in two splits
    assert not keys(data.train) & keys(data.test) and not keys(data.train) & keys(data.val)


def test_python_docs_topics_without_the_package_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"apt-get install python3\.11-doc"):
        load_dataset("python-docs-topics", tmp_path / "nothing")


@pytest.mark.skipif(not PYTHON_DOCS_ROOT.is_dir(), reason="python3.11-doc is not installed")
def test_python_docs_topics_reads_the_installed_documentation() -> None:
    data = load_dataset("python-docs-topics", options={"block_size": 64})
    assert data.num_classes == 7 and 4000 < len(data.train) < 8000
    assert all((data.test.labels == k).any() for k in range(data.num_classes))  # every class is tested


# ------------------------------------------------------------------------- Hugging Face tokenizers


def _local_code_tokenizer(tmp_path: Path) -> Path:
    """A tokenizer folder whose config names Python code in it (written here: nothing foreign runs)."""
    pytest.importorskip("transformers")
    from tests.data.test_hf_tokenizer import save_tiny_tokenizer

    directory = save_tiny_tokenizer(tmp_path / "tok")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_local.LocalTokenizerFast"]}
    config["pad_token"] = "<unk>"
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "tokenization_local.py").write_text(
        "from transformers import PreTrainedTokenizerFast\n\n\nclass LocalTokenizerFast(PreTrainedTokenizerFast):\n"
        "    pass\n"
    )
    return directory


def test_trust_code_reaches_a_tokenizer_with_its_own_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # the copied code goes here
    monkeypatch.setattr(sys, "path", list(sys.path))
    tok = _local_code_tokenizer(tmp_path)
    corpus = ["the cat sat on the mat", "the dog sat on the log"]
    records = [{"text": f"{corpus[i % 2]} {i}", "label": ["cat", "dog"][i % 2]} for i in range(40)]
    root = write_jsonl(tmp_path / "d.jsonl", records)
    options = {"tokenizer": f"hf:{tok}", "block_size": 8}
    with pytest.raises(ConfigError, match=r"auto_map.*--trust-code"):
        load_dataset("text-classification", root, options=options)
    with pytest.raises(ConfigError, match=r"auto_map.*--trust-code"):
        load_dataset(
            "text", write_jsonl(tmp_path / "lm" / "t.jsonl", [{"text": c} for c in corpus]), options=options
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset("text-classification", root, options=options, trust_code=True)
    assert any("running the tokenizer code" in str(w.message) for w in caught)
    assert data.extra["tokenizer"].startswith("hf-") and data.vocab_size is not None and data.vocab_size < 20
    from distil.data.tokenize import get_tokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert type(get_tokenizer(f"hf:{tok}", trust_remote_code=True).hf).__name__ == "LocalTokenizerFast"


def test_a_tokenizer_without_a_pad_token_is_refused_with_the_fix(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.data.test_hf_tokenizer import save_tiny_tokenizer

    tok = save_tiny_tokenizer(tmp_path / "tok")
    root = write_jsonl(tmp_path / "d.jsonl", [{"text": f"the cat {i}", "label": i % 2} for i in range(20)])
    with pytest.raises(ConfigError, match="no pad token"):
        load_dataset("text-classification", root, options={"tokenizer": f"hf:{tok}"})


def test_a_bert_tokenizer_frames_each_row_with_cls_and_sep_then_pads_with_its_pad_id(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from distil.data.tokenize import get_tokenizer
    from tests.data.test_hf_tokenizer import BERT_VOCAB, CORPUS, save_bert_tokenizer

    directory = save_bert_tokenizer(tmp_path / "bert")
    ids = {w: i for i, w in enumerate(BERT_VOCAB)}
    cls, sep, pad = ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]
    tok = get_tokenizer(f"hf:{directory}")
    long = LabelledText("the cat sat on the mat", "a", "t")
    rows, cut = encode_rows([LabelledText("the cat sat", "a", "t"), long], tok, 7)
    assert rows[0].tolist() == [cls, ids["the"], ids["cat"], ids["sat"], sep, pad, pad]
    # truncated text, but the row still ends with [SEP]
    assert rows[1].tolist() == [cls, *(ids[w] for w in ["the", "cat", "sat", "on", "the"]), sep] and cut == 1
    # Through the dataset: no eos_token is needed, as documents are never joined.
    records = [
        {"text": f"{CORPUS[i % 3]} {'and ' * (i % 4)}", "label": ["x", "y", "z"][i % 3]} for i in range(60)
    ]
    root = write_jsonl(tmp_path / "d.jsonl", records)
    data = load_dataset(
        "text-classification", root, options={"tokenizer": f"hf:{directory}", "block_size": 16}
    )
    assert (data.extra["pad_id"], data.extra["start_id"], data.extra["end_id"]) == (
        str(pad),
        str(cls),
        str(sep),
    )
    assert data.vocab_size == len(BERT_VOCAB)
    for row in data.train.x:  # type: ignore[attr-defined]
        n = int((row != pad).sum())
        assert row[0] == cls and row[n - 1] == sep and (row[n:] == pad).all() and (row[1 : n - 1] > sep).all()
    # Language modelling joins documents with EOS: there the same tokenizer is refused, with the reason.
    lm = write_jsonl(tmp_path / "lm" / "t.jsonl", [{"text": c} for c in CORPUS])
    with pytest.raises(ConfigError, match=r"no eos_token, which language-modelling data needs"):
        load_dataset("text", lm, options={"tokenizer": f"hf:{directory}", "block_size": 4})
