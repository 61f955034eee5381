"""Text classification: labelled documents, one sample each, token ids truncated and padded to one block.

Sources:

* ``text-classification``: JSONL, CSV or TSV (a file, a folder of them or ``folder/**/*.csv``): one
  record per line or row with a text field and a label field (``data.text_field`` / ``data.label_field``,
  default ``text`` / ``label``; other keys or columns are ignored; a CSV/TSV header row names the
  columns). Labels are all strings (the classes are the distinct strings, sorted) or all integers (class
  ids; the classes are ``"0" .. str(max)``; a CSV/TSV file whose labels are all integers gives class ids).
  Records are read by :func:`distil.data.records.read_records`, so invalid UTF-8, bad JSON and malformed
  rows are reported with the file and line (``errors: replace`` turns invalid bytes into U+FFFD), and a
  UTF-8 byte order mark is dropped.
* ``python-docs-topics``: paragraphs of the Python documentation's reStructuredText sources (Debian's
  python3.11-doc), labelled by the section they come from (see :data:`TOPICS`). Nothing to download.

A sample is ``{"inputs": (T,) int64, "labels": class id}`` with ``T = block_size``: the special tokens
the tokenizer puts around one sequence (:func:`row_format`: BERT's ``[CLS] ... [SEP]``, the byte
tokenizer's BOS first), the document's tokens between them **truncated** so that the row holds T (the
counts are ``extra["truncated"]``), then **right-padding** with the tokenizer's pad id
(``extra["pad_id"]``). No end-of-sequence token is needed: documents are never joined. The ids carry no separate mask: ``hf-seq-classifier`` masks the
positions holding its config's ``pad_token_id`` (:class:`distil.models.hf.SeqClassifier`), and
``distil.train.build.fit_classifier_to_text`` refuses a model whose pad id is not the data's. The task is
``classification``, so training, distillation and measurement are the ones of every classifier.

Splits are fixed, not drawn from a seed: JSONL documents by a hash of their text (:data:`TEST_FRACTION`
test, ``val_fraction`` val; identical texts always land in one split), or, when the files are named
``train``/``val``/``test`` (``.jsonl``, ``.csv``, ``.tsv``), by those files (without a val file, val is carved out of train by
the same hash); the topics by whole files (a hash of their path,
as ``python-docs``). ``limit`` then keeps a stratified subset. The splits are held in memory as int64 ids
(``N x T x 8`` bytes) and tokenized on each load; unlike the language-modelling corpora there is no disk
cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distil.data.bundle import DataBundle, Split
from distil.data.records import DELIMITERS, RECORD_SUFFIXES, read_records, read_text
from distil.data.registry import DATASETS, limit_bundle
from distil.data.text import (
    DEFAULT_BLOCK_SIZE,
    PYTHON_DOCS_ROOT,
    find_files,
    path_fraction,
    python_docs_files,
    split_files,
)
from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.data.validate import validate_bundle
from distil.errors import ConfigError, DataError

TEST_FRACTION = 0.1
"""Share of JSONL documents held out for test (by a hash of their text)."""
SPLIT_FILES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
"""JSONL file names (stems) that say which split their documents belong to."""


@dataclass(frozen=True)
class LabelledText:
    """One document and its raw label (a string or an int), with where it came from (for messages)."""

    text: str
    label: str | int
    where: str


# --------------------------------------------------------------------------------------------
# reading


def read_labelled(
    path: Path, *, text_field: str = "text", label_field: str = "label", errors: str = "strict"
) -> list[LabelledText]:
    """The labelled documents of a JSONL, CSV or TSV file (:func:`distil.data.records.read_records`).

    CSV/TSV values are strings: when every label of such a file is an integer (``0``, ``1``, ...), they are
    class ids, as JSONL integers are.

    Raises:
        DataError: bad UTF-8, JSON or CSV, a record without the text or label field (its keys are listed,
            so a misnamed field is found), empty text, or a label that is neither a string nor an integer;
            each names the file and line.
    """
    docs = []
    kind = "column" if path.suffix.lower() in DELIMITERS else "key"
    for where, record in read_records(path, errors):
        for field, option in ((text_field, "text_field"), (label_field, "label_field")):
            if field not in record:
                raise DataError(
                    f"{where} has no {field!r} field (its {kind}s: {sorted(record)}); set data.{option}=<the "
                    f"{kind} that holds each document's {option.split('_')[0]}>."
                )
        text, label = record[text_field], record[label_field]
        if not isinstance(text, str):
            raise DataError(f"{where}: {text_field!r} is a {type(text).__name__}, not a string of text.")
        if not text.strip():
            raise DataError(
                f"{where}: {text_field!r} is empty; a document without text cannot be classified. Drop the "
                "record or give it text."
            )
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(
                f"{where}: label {label!r} ({type(label).__name__}) in {label_field!r}; labels must be strings "
                "(class names) or integers (class ids)."
            )
        docs.append(LabelledText(text, label, where))
    if kind == "column" and all(_INTEGER.fullmatch(str(d.label)) for d in docs):
        docs = [LabelledText(d.text, int(d.label), d.where) for d in docs]
    return docs


_INTEGER = re.compile(r"-?[0-9]+")


def class_names_of(docs: Sequence[LabelledText], name: str) -> list[str]:
    """The classes of `docs`: their distinct string labels sorted, or ``"0" .. str(max)`` for int labels.

    Raises:
        DataError: string and integer labels mixed, a negative class id, or fewer than two classes.
    """
    if not docs:
        raise DataError(f"dataset {name!r} holds no documents.")
    kinds = {type(d.label) for d in docs}
    if len(kinds) > 1:
        first = {kind: next(d for d in docs if type(d.label) is kind) for kind in kinds}
        raise DataError(
            f"dataset {name!r} mixes string and integer labels ({first[str].where}: {first[str].label!r}, "
            f"{first[int].where}: {first[int].label!r}); use one kind: class names or class ids."
        )
    if kinds == {int}:
        ids = [int(d.label) for d in docs]
        bad = next((d for d in docs if int(d.label) < 0), None)
        if bad is not None:
            raise DataError(f"{bad.where}: class id {bad.label} is negative; class ids are 0, 1, 2, ...")
        names = [str(i) for i in range(max(ids) + 1)]
    else:
        names = sorted({str(d.label) for d in docs})
    distinct = {d.label for d in docs}
    if len(distinct) < 2:
        raise DataError(
            f"dataset {name!r}: every document has the label {next(iter(distinct))!r}; a classifier needs at "
            "least two classes. Check data.label_field, or add documents of other classes."
        )
    return names


# --------------------------------------------------------------------------------------------
# tokenizing


@dataclass(frozen=True)
class RowFormat:
    """How one document becomes a row: ``head + tokens + tail``, right-padded with ``pad``.

    ``head``/``tail`` are the special ids the tokenizer puts around one sequence (BERT: ``[CLS]`` and
    ``[SEP]``; the byte tokenizer: its BOS and nothing).
    """

    head: tuple[int, ...]
    tail: tuple[int, ...]
    pad: int


def row_format(tokenizer: Tokenizer) -> RowFormat:
    """The :class:`RowFormat` of a tokenizer: its ``framing()`` (the special tokens it adds to one
    sequence) when it has one, else its ``bos_id`` as the start; its ``pad_id``.

    Raises:
        ConfigError: a tokenizer without a pad token (a Hugging Face one can be given one and saved again).
    """
    framing = getattr(tokenizer, "framing", None)
    if framing is not None:
        head, tail = framing()
    else:
        start = getattr(tokenizer, "bos_id", None)
        head, tail = ([] if start is None else [start]), []
    pad = getattr(tokenizer, "pad_id", None)
    if pad is None:
        raise ConfigError(
            f"tokenizer {tokenizer.fingerprint} has no pad token, which classification samples are padded with. "
            "Give it one (tokenizer.pad_token = tokenizer.eos_token, or add a [PAD] token) and save it again."
        )
    return RowFormat(tuple(int(i) for i in head), tuple(int(i) for i in tail), int(pad))


def encode_rows(
    docs: Sequence[LabelledText], tokenizer: Tokenizer, block_size: int
) -> tuple[torch.Tensor, int]:
    """(N, T) int64 ids, ``head + tokens + tail`` (:func:`row_format`; the tokens truncated so that the
    tail still ends the row) right-padded to T, and how many documents were truncated.

    Raises:
        ConfigError: a block too short for the special tokens and one token of text.
        DataError: text the tokenizer cannot encode (naming the document), or one that encodes to nothing.
    """
    fmt = row_format(tokenizer)
    room = block_size - len(fmt.head) - len(fmt.tail)
    if room < 1:
        raise ConfigError(
            f"block_size {block_size} leaves no room for text next to the tokenizer's {len(fmt.head)} + "
            f"{len(fmt.tail)} special tokens; raise block_size to at least {block_size - room + 1}."
        )
    rows = torch.full((len(docs), block_size), fmt.pad, dtype=torch.int64)
    truncated = 0
    for i, doc in enumerate(docs):
        try:
            tokens = tokenizer.encode(doc.text)
        except UnicodeEncodeError as exc:
            raise DataError(f"{doc.where}: the tokenizer cannot encode this text ({exc}).") from exc
        if not tokens:
            raise DataError(f"{doc.where}: the text encodes to no tokens; drop the record or give it text.")
        if len(tokens) > room:
            truncated += 1
            tokens = tokens[:room]
        ids = [*fmt.head, *tokens, *fmt.tail]
        rows[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return rows, truncated


# --------------------------------------------------------------------------------------------
# the bundle


def classification_bundle(
    name: str,
    splits: dict[str, list[LabelledText]],
    tokenizer: str | Tokenizer,
    *,
    block_size: int,
    source: str,
    limit: int | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    extra: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
    trust_code: bool = False,
) -> DataBundle:
    """A classification bundle of token-id rows from labelled documents already split.

    Args:
        name: the bundle's name.
        splits: "train", "val" and "test" documents (val may be empty).
        tokenizer: a registered tokenizer name, ``hf:DIR``, or a :class:`Tokenizer`.
        block_size: T, the tokens of one sample (truncated or padded to it).
        source: where the documents were read from.
        limit: keep at most this many train and ``max(1, limit // 5)`` val/test samples (stratified).
        seed: seed of `limit`'s stratified choice.
        class_names: the classes, when fixed by the dataset; None: from the labels
            (:func:`class_names_of`).
        extra: notes added to the bundle's ``extra``.
        options: the reader options that decided the samples, recorded in checkpoint sidecars so that
            ``distil eval`` and the other commands on a checkpoint read the same samples.
        trust_code: let an ``hf:DIR`` tokenizer with its own code run it (``--trust-code``).

    Raises:
        ConfigError: block_size < 2, or a tokenizer without a pad token.
        DataError: a label set of one class, an empty train or test split, or bad documents.
    """
    if block_size < 2:
        raise ConfigError(f"block_size must be >= 2 tokens (a start token and text), got {block_size}.")
    tok = get_tokenizer(tokenizer, trust_remote_code=trust_code)
    everything = [d for s in ("train", "val", "test") for d in splits[s]]
    names = list(class_names) if class_names is not None else class_names_of(everything, name)
    for split_name in ("train", "test"):
        if not splits[split_name]:
            raise DataError(
                f"dataset {name!r}: the {split_name} split of {source!r} is empty ({len(everything)} documents "
                "in all); add documents, or name files train.jsonl and test.jsonl (or .csv, .tsv) to choose the splits."
            )
    index = {label: i for i, label in enumerate(names)}
    built: dict[str, Split] = {}
    truncated: dict[str, int] = {}
    for split_name in ("train", "val", "test"):
        docs = splits[split_name]
        x, cut = encode_rows(docs, tok, block_size)
        y = torch.tensor([index[str(d.label)] for d in docs], dtype=torch.int64)
        built[split_name], truncated[split_name] = Split(x, y), cut
    fmt = row_format(tok)
    notes = {
        "tokenizer": tok.fingerprint,
        "tokenizer_name": tokenizer if isinstance(tokenizer, str) else "",
        "vocab_size": str(tok.vocab_size),
        "block_size": str(block_size),
        "pad_id": str(fmt.pad),
        "start_id": str(fmt.head[0]) if fmt.head else "",
        "end_id": str(fmt.tail[-1]) if fmt.tail else "",
        "documents": str(len(everything)),
        "truncated": ", ".join(f"{k}: {v}" for k, v in truncated.items()),
        **(extra or {}),
    }
    bundle = DataBundle(
        name=name,
        train=built["train"],
        val=built["val"],
        test=built["test"],
        class_names=names,
        mean=(),
        std=(),
        source=source,
        extra=notes,
        options=dict(options or {}),
    )
    if limit is not None:
        bundle = limit_bundle(bundle, limit, seed)
    validate_bundle(bundle)
    return bundle


def _check_fraction(val_fraction: float, test_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0 - test_fraction:
        raise ConfigError(f"val_fraction must be in [0, {1 - test_fraction:g}), got {val_fraction}.")


def split_by_text(
    docs: Sequence[LabelledText], *, val_fraction: float, test_fraction: float = TEST_FRACTION
) -> dict[str, list[LabelledText]]:
    """Documents into train/val/test by :func:`~distil.data.text.path_fraction` of their text: stable on
    every machine and run, and a text that occurs twice never lands in two splits."""
    out: dict[str, list[LabelledText]] = {"train": [], "val": [], "test": []}
    for doc in docs:
        u = path_fraction(doc.text)
        out["test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"].append(
            doc
        )
    return out


class TextClassificationCorpus:
    """The `LazyDataset` of ``text-classification``: JSONL/CSV/TSV files read and split when the bundle is
    built."""

    def __init__(
        self,
        root: Path,
        *,
        block_size: int | None = None,
        tokenizer: str | None = None,
        errors: str | None = None,
        text_field: str | None = None,
        label_field: str | None = None,
        trust_code: bool = False,
    ) -> None:
        self.root = root
        self.block_size = block_size or DEFAULT_BLOCK_SIZE
        self.tokenizer = tokenizer or "byte"
        self.errors = errors or "strict"
        self.text_field = text_field or "text"
        self.label_field = label_field or "label"
        self.trust_code = trust_code

    def build_bundle(self, name: str, *, val_fraction: float, seed: int, limit: int | None) -> DataBundle:
        _check_fraction(val_fraction, TEST_FRACTION)
        _, files = find_files(self.root, tuple(f"**/*{suffix}" for suffix in RECORD_SUFFIXES))
        others = [p for p in files if p.suffix.lower() not in RECORD_SUFFIXES]
        if others:
            raise DataError(
                f"dataset {name!r} reads labelled records: JSONL (one {{{self.text_field!r}: ..., "
                f"{self.label_field!r}: ...}} per line), or CSV/TSV with a header naming those columns; "
                f"{others[0]} is not a .jsonl, .csv or .tsv file."
            )
        read = {
            p: read_labelled(p, text_field=self.text_field, label_field=self.label_field, errors=self.errors)
            for p in files
        }
        named = {p: SPLIT_FILES.get(p.stem.lower()) for p in files}
        if "test" in named.values():
            unnamed = [p for p, s in named.items() if s is None]
            if unnamed:
                raise DataError(
                    f"dataset {name!r}: {unnamed[0]} is not named train, val or test, but other files of "
                    f"{str(self.root)!r} are; name every file by its split, or none (then documents are split "
                    "by a hash of their text)."
                )
            splits: dict[str, list[LabelledText]] = {"train": [], "val": [], "test": []}
            for p, split_name in named.items():
                splits[str(split_name)].extend(read[p])
            if "val" not in named.values():  # val comes out of train, by the hash of each text
                carved = split_by_text(splits["train"], val_fraction=val_fraction, test_fraction=0.0)
                splits["train"], splits["val"] = carved["train"], carved["val"]
            how = "files"
        else:
            docs = [d for p in files for d in read[p]]
            splits = split_by_text(docs, val_fraction=val_fraction)
            how = "text hash"
        return classification_bundle(
            name,
            splits,
            self.tokenizer,
            block_size=self.block_size,
            source=str(self.root),
            limit=limit,
            seed=seed,
            extra={
                "text_field": self.text_field,
                "label_field": self.label_field,
                "split_by": how,
                "files": str(len(files)),
            },
            options={
                "block_size": self.block_size,
                "tokenizer": self.tokenizer,
                "errors": self.errors,
                "text_field": self.text_field,
                "label_field": self.label_field,
            },
            trust_code=self.trust_code,
        )


@DATASETS.register("text-classification")
def text_classification_reader(
    root: Path | None,
    block_size: int | None = None,
    tokenizer: str | None = None,
    errors: str | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    trust_code: bool = False,
) -> TextClassificationCorpus:
    """Labelled text: `data.root` is a JSONL, CSV or TSV file, a folder of them or ``folder/**/*.csv``, one
    ``{"text": ..., "label": ...}`` per line (CSV/TSV: columns named by a header row; `data.text_field` /
    `data.label_field` rename them); each document is one sample of ``block_size`` token ids (default
    256), truncated or padded."""
    if root is None:
        raise DataError(
            "dataset 'text-classification' needs data.root: a JSONL, CSV or TSV file or a folder of them, "
            'one {"text": "...", "label": "..."} per line (CSV/TSV: a header row text,label).'
        )
    return TextClassificationCorpus(
        root,
        block_size=block_size,
        tokenizer=tokenizer,
        errors=errors,
        text_field=text_field,
        label_field=label_field,
        trust_code=trust_code,
    )


# --------------------------------------------------------------------------------------------
# python-docs-topics

TOPICS: dict[str, str] = {
    "library": "library",
    "c-api": "c-api",
    "extending": "c-api",
    "reference": "reference",
    "tutorial": "tutorial",
    "using": "tutorial",
    "howto": "howto",
    "faq": "howto",
    "whatsnew": "whatsnew",
    "distutils": "packaging",
    "install": "packaging",
    "installing": "packaging",
    "distributing": "packaging",
}
"""Top-level folder of the Python docs -> class. Small folders join the class they read like (extending
the C API; using Python with the tutorial; the FAQ with the how-tos; the four packaging guides together);
the top-level pages (about, glossary, license, ...) and ``includes/`` are left out."""
TOPICS_TEST_FRACTION = 0.2
"""Share of files held out for test: at 5% (``python-docs``) most small classes would have no test file."""
PARAGRAPHS_PER_FILE = 24
"""At most this many paragraphs of each file, evenly spaced (uncapped, the library's 317 files would give
half of the 25k paragraphs): ~7,700 in all, which a tiny model reads in seconds per epoch on a CPU (at 8
per file, 3,300, a tiny byte-level BERT overfitted before it beat the majority class)."""
MIN_CHARS = 120
"""Shorter blocks (captions, one-line notes) say too little to classify."""

_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_.:<>])\1{2,}$")
_NOT_PROSE = ("..", ">>>", "...", "|", "+-", "$", "%")


def rst_paragraphs(text: str, min_chars: int = MIN_CHARS) -> list[str]:
    """The prose paragraphs of reStructuredText, each joined into one line.

    A paragraph is a block between blank lines; dropped are directives and comments (``..``), doctests,
    tables, headings (a line of one repeated punctuation character), blocks shorter than `min_chars` and
    those under 80% letters and spaces (code, option lists).
    """
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines or lines[0].startswith(_NOT_PROSE) or any(_UNDERLINE.match(line) for line in lines):
            continue
        paragraph = " ".join(lines)
        prose = sum(c.isalpha() or c.isspace() for c in paragraph)
        if len(paragraph) >= min_chars and prose >= 0.8 * len(paragraph):
            out.append(paragraph)
    return out


def topic_of(base: Path, path: Path) -> str | None:
    """The class of a documentation file (its top-level folder through :data:`TOPICS`), None if unused."""
    parts = path.relative_to(base).parts
    return TOPICS.get(parts[0]) if len(parts) > 1 else None


def topic_documents(base: Path, files: Sequence[Path], errors: str = "strict") -> list[LabelledText]:
    """Up to :data:`PARAGRAPHS_PER_FILE` evenly spaced paragraphs of each file, labelled by its topic."""
    docs = []
    for path in files:
        topic = topic_of(base, path)
        if topic is None:
            continue
        found = rst_paragraphs(read_text(path, errors))
        n = len(found)
        picks = (
            range(n)
            if n <= PARAGRAPHS_PER_FILE
            else [i * n // PARAGRAPHS_PER_FILE for i in range(PARAGRAPHS_PER_FILE)]
        )
        docs += [LabelledText(found[i], topic, f"{path} (paragraph {i + 1})") for i in picks]
    return docs


class PythonDocsTopics:
    """The `LazyDataset` of ``python-docs-topics``: whole files held out by a hash of their path."""

    def __init__(
        self,
        root: Path,
        files: list[Path],
        *,
        block_size: int | None = None,
        tokenizer: str | None = None,
        errors: str | None = None,
        trust_code: bool = False,
    ) -> None:
        self.root, self.files = root, files
        self.block_size = block_size or DEFAULT_BLOCK_SIZE
        self.tokenizer = tokenizer or "byte"
        self.errors = errors or "strict"
        self.trust_code = trust_code

    def build_bundle(self, name: str, *, val_fraction: float, seed: int, limit: int | None) -> DataBundle:
        _check_fraction(val_fraction, TOPICS_TEST_FRACTION)
        groups = split_files(
            self.root, self.files, val_fraction=val_fraction, test_fraction=TOPICS_TEST_FRACTION
        )
        splits = {k: topic_documents(self.root, v, self.errors) for k, v in groups.items()}
        return classification_bundle(
            name,
            splits,
            self.tokenizer,
            block_size=self.block_size,
            source=str(self.root),
            limit=limit,
            seed=seed,
            class_names=sorted(set(TOPICS.values())),
            extra={"split_by": "files", "files": str(len(self.files))},
            options={"block_size": self.block_size, "tokenizer": self.tokenizer, "errors": self.errors},
            trust_code=self.trust_code,
        )


@DATASETS.register("python-docs-topics")
def python_docs_topics_reader(
    root: Path | None,
    block_size: int | None = None,
    tokenizer: str | None = None,
    errors: str | None = None,
    trust_code: bool = False,
) -> PythonDocsTopics:
    """Paragraphs of the Python documentation (Debian's python3.11-doc, no download) labelled by their
    section: library, c-api, reference, tutorial, howto, whatsnew, packaging (see :data:`TOPICS`); whole
    files held out as test (20%) and val by a hash of their path; `root` may point at another
    ``html/_sources`` folder."""
    base = root or PYTHON_DOCS_ROOT
    files = python_docs_files(base) if base.is_dir() else []
    if not files:
        raise DataError(
            f"no Python documentation sources (*.rst.txt) under {base}. Install them with "
            "`apt-get install python3.11-doc` (Debian/Ubuntu), or give data.root pointing at the "
            "html/_sources folder of a Python documentation build."
        )
    return PythonDocsTopics(
        base, files, block_size=block_size, tokenizer=tokenizer, errors=errors, trust_code=trust_code
    )


__all__ = [
    "TOPICS",
    "LabelledText",
    "RowFormat",
    "class_names_of",
    "classification_bundle",
    "encode_rows",
    "read_labelled",
    "row_format",
    "rst_paragraphs",
    "split_by_text",
    "topic_documents",
]
