"""Text corpora for language modelling: files read strictly, tokenized, packed into blocks, cached on disk.

Sources (a file, a folder, or a folder with a glob such as ``src/**/*.py``):

* plain-text files (any suffix but ``.jsonl``, ``.csv``, ``.tsv``): each file is one document; a leading
  UTF-8 byte order mark is dropped and CRLF/CR line ends become LF (``newlines="keep"`` keeps both);
* records (``.jsonl``, ``.csv``, ``.tsv``, read by :func:`distil.data.records.read_records`): one document
  per record, ``{"text": ...}`` or ``{"prompt": ..., "completion": ...}`` (one document whose prompt tokens
  carry no label: the loss and the metrics count the completion only); in CSV/TSV files these are the
  header's column names. Blank lines are skipped.

Files are read as strict UTF-8: invalid bytes are a :class:`DataError` naming the file and byte offset
(``errors="replace"`` turns them into U+FFFD instead). Empty files are skipped and counted
(``DataBundle.extra["skipped_empty_files"]``); a corpus with no text at all is an error. The tokenizer
must have an end-of-sequence token (documents are joined with it).

Packing: the documents of a split are tokenized and joined into one token stream, each followed by the
tokenizer's EOS id. Block ``i`` is the ``block_size + 1`` tokens ``stream[i*T : i*T + T + 1]`` (``T`` =
``block_size``): ``inputs = block[:-1]``, ``labels = block[1:]`` (the next token at each position,
``IGNORE_INDEX`` where it is a prompt token). Consecutive blocks share one token, so every token but the
first is a target exactly once; the tail that does not fill a block is dropped.

Cache: each split's token stream is written once as ``.npy`` (uint16 for vocabularies below 65536, else
int32) under ``$DISTIL_CACHE_DIR/text`` (default ``~/.cache/distil/text``), in a folder named by a hash of
the tokenizer's fingerprint, the reading options and each file's path, size and modification time; it is
built in a temporary folder and renamed into place, so a crash never leaves a half cache. A changed file
gets a new key (the old folder stays until deleted). Blocks are views of the memory-mapped stream, so the
block size is not part of the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distil.data.batch import IGNORE_INDEX, INDEX, INPUTS, LABELS
from distil.data.bundle import LANGUAGE_MODELING, DataBundle, batch_ranges
from distil.data.records import is_records_file, read_records, read_text, strip_bom
from distil.data.registry import DATASETS
from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.data.validate import validate_bundle
from distil.errors import ConfigError, DataError
from distil.fileio import atomic_dir, atomic_write_json

DEFAULT_BLOCK_SIZE = 256
DEFAULT_PATTERNS = ("**/*.txt", "**/*.md", "**/*.rst", "**/*.py", "**/*.jsonl")
TEST_FRACTION = 0.05
CACHE_FORMAT = 1
_TOKENS = "tokens.npy"
_MASK = "loss_mask.npy"
_META = "meta.json"


def default_text_cache_dir() -> Path:
    """`$DISTIL_CACHE_DIR/text` when the variable is set, else `~/.cache/distil/text`."""
    env = os.environ.get("DISTIL_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "distil") / "text"


# --------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Document:
    """One document: `prompt` (no labels; empty for plain text) followed by `text` (labelled)."""

    text: str
    prompt: str = ""
    where: str = ""  # "file" or "file:line", for messages


NEWLINES = ("normalize", "keep")
"""How plain-text documents' line ends are read: ``normalize`` (a leading byte order mark dropped, CRLF and
CR made LF, so a file saved on Windows gives the tokens of the same file saved on Linux) or ``keep``."""


def normalize_newlines(text: str) -> str:
    """`text` without a leading UTF-8 byte order mark, its CRLF and lone CR line ends made LF."""
    return strip_bom(text).replace("\r\n", "\n").replace("\r", "\n")


def record_document(where: str, record: dict[str, Any]) -> Document:
    """The document of one record (a JSONL object or a CSV/TSV row): its ``text``, or its ``prompt`` and
    ``completion``.

    Raises:
        DataError: neither a string ``text`` nor string ``prompt`` and ``completion``, naming the record.
    """
    if isinstance(record.get("text"), str):
        return Document(record["text"], where=where)
    if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        return Document(record["completion"], prompt=record["prompt"], where=where)
    if "messages" in record:
        raise DataError(
            f"{where} holds a conversation (\"messages\"), which dataset 'text' would pack into blocks with "
            "its neighbours; read chat data with data.name: chat (one conversation per row, the loss on the "
            "assistant's tokens only)."
        )
    raise DataError(f"{where} has keys {sorted(record)}; {_RECORD_FIX}")


def read_record_documents(path: Path, errors: str = "strict") -> list[Document]:
    """The documents of a JSONL, CSV or TSV file: ``text``, or ``prompt`` + ``completion``, per record.

    Raises:
        DataError: invalid UTF-8, a malformed line or row, or a record without string `text` /
            `prompt` + `completion`; the message names the file and line.
    """
    return [record_document(where, record) for where, record in read_records(path, errors)]


_RECORD_FIX = (
    'each record needs a string "text", or string "prompt" and "completion" (the loss then counts the '
    "completion tokens only); in a .csv/.tsv file these are the header's column names."
)


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def find_files(root: str | Path, patterns: Sequence[str] = DEFAULT_PATTERNS) -> tuple[Path, list[Path]]:
    """The base folder and the sorted files of a corpus.

    Args:
        root: a file; a folder (searched with `patterns`); or a folder followed by a glob
            (``docs/**/*.rst``), which replaces `patterns`.
        patterns: globs relative to a folder root.

    Raises:
        DataError: a missing root, or no file matching.
    """
    text = str(root)
    if _has_glob(text):
        parts = Path(text).parts
        cut = next(i for i, p in enumerate(parts) if _has_glob(p))
        base = Path(*parts[:cut]) if cut else Path(".")
        patterns = ("/".join(parts[cut:]),)
    else:
        base = Path(text)
        if base.is_file():
            return base.parent, [base]
    if not base.is_dir():
        raise DataError(
            f"text corpus {text!r}: no such file or folder. Give a file, a folder or folder/**/*.txt."
        )
    files = sorted({p for pattern in patterns for p in base.glob(pattern) if p.is_file()})
    if not files:
        raise DataError(
            f"text corpus {text!r}: no file matches {list(patterns)} under {base}. "
            "Check the path, or give a glob such as folder/**/*.txt."
        )
    return base, files


def read_documents(
    files: Sequence[Path], errors: str = "strict", newlines: str = "normalize"
) -> tuple[list[Document], int]:
    """The documents of `files` and the number of empty files skipped.

    JSONL, CSV and TSV files give one document per record (:func:`read_record_documents`); any other file
    is one document, its line ends read as `newlines` says (see :data:`NEWLINES`).
    """
    docs: list[Document] = []
    empty = 0
    for path in files:
        if is_records_file(path):
            found = read_record_documents(path, errors)
            if not found:
                empty += 1
            docs.extend(found)
            continue
        text = read_text(path, errors)
        if newlines == "normalize":
            text = normalize_newlines(text)
        if not text:
            empty += 1
            continue
        docs.append(Document(text, where=str(path)))
    return docs, empty


# --------------------------------------------------------------------------------------------
# tokenizing and caching


def _token_dtype(vocab_size: int) -> np.dtype[Any]:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def encode_documents(
    docs: Sequence[Document], tokenizer: Tokenizer, block_size: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One token stream of `docs`, each followed by EOS, and its loss mask (None when every token counts).

    Args:
        docs: the documents.
        tokenizer: encodes each prompt and text.
        block_size: when given, a prompt + completion document longer than one block is an error (its
            completion would be trained without its prompt in view).

    Raises:
        DataError: a prompt + completion longer than a block, or text the tokenizer cannot encode.
    """
    dtype = _token_dtype(tokenizer.vocab_size)
    pieces: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    any_prompt = False
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    for doc in docs:
        try:
            prompt = np.asarray(tokenizer.encode(doc.prompt) if doc.prompt else [], dtype=dtype)
            body = np.asarray(tokenizer.encode(doc.text), dtype=dtype)
        except UnicodeEncodeError as exc:
            raise DataError(f"{doc.where}: the tokenizer cannot encode this text ({exc}).") from exc
        if doc.prompt:
            any_prompt = True
            length = len(prompt) + len(body) + 1
            if block_size is not None and length > block_size + 1:
                raise DataError(
                    f"{doc.where}: prompt + completion is {length} tokens, longer than a block of "
                    f"{block_size} (+1); the completion would be trained without its prompt. Raise block_size "
                    "to at least that, or shorten the record."
                )
        pieces += [prompt, body, eos]
        masks += [np.zeros(len(prompt), bool), np.ones(len(body) + 1, bool)]
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype)
    return tokens, (np.concatenate(masks) if any_prompt else None)


def cache_key(
    files: Sequence[Path],
    tokenizer: Tokenizer,
    *,
    errors: str = "strict",
    block_size: int | None = None,
    newlines: str = "normalize",
) -> str:
    """A hash of what a token stream depends on: tokenizer, options, and each file's path, size and mtime."""
    entries = []
    for path in files:
        st = path.stat()
        entries.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    spec = {
        "format": CACHE_FORMAT,
        "tokenizer": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "eos": tokenizer.eos_id,
        "errors": errors,
        "newlines": newlines,
        # Only the prompt-length check depends on the block size (of records files).
        "block_size": block_size if any(is_records_file(p) for p in files) else None,
        "files": entries,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class TokenStream:
    """A cached token stream: its folder (tokens.npy, optional loss_mask.npy, meta.json) and length."""

    directory: Path
    length: int
    has_mask: bool
    skipped_empty: int
    built: bool  # False: read from the cache

    @property
    def tokens_path(self) -> Path:
        return self.directory / _TOKENS

    @property
    def mask_path(self) -> Path | None:
        return self.directory / _MASK if self.has_mask else None


def build_stream(
    files: Sequence[Path],
    tokenizer: Tokenizer,
    *,
    cache_dir: str | Path | None = None,
    errors: str = "strict",
    block_size: int | None = None,
    newlines: str = "normalize",
) -> TokenStream:
    """The token stream of `files`, read from the cache or built into it atomically.

    Raises:
        DataError: bad input (see :func:`read_documents`, :func:`encode_documents`).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_text_cache_dir()
    final = root / cache_key(files, tokenizer, errors=errors, block_size=block_size, newlines=newlines)
    meta_path = final / _META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            return TokenStream(
                final, int(meta["length"]), bool(meta["has_mask"]), int(meta["skipped_empty"]), False
            )
        except (OSError, ValueError, KeyError):
            shutil.rmtree(final, ignore_errors=True)  # unreadable: rebuild below
    docs, empty = read_documents(files, errors, newlines)
    tokens, mask = encode_documents(docs, tokenizer, block_size)
    root.mkdir(parents=True, exist_ok=True)
    # A locked temporary build, renamed into place; builds left by killed processes are removed.
    with atomic_dir(final, complete=lambda path: (path / _META).is_file()) as tmp:
        np.save(tmp / _TOKENS, tokens)
        if mask is not None:
            np.save(tmp / _MASK, mask)
        meta = {
            "length": len(tokens),
            "has_mask": mask is not None,
            "skipped_empty": empty,
            "documents": len(docs),
            "tokenizer": tokenizer.fingerprint,
            "files": len(files),
        }
        atomic_write_json(tmp / _META, meta)  # last: a folder with meta.json is complete
    return TokenStream(final, len(tokens), mask is not None, empty, True)


# --------------------------------------------------------------------------------------------
# the split


class IndexedTokenRows:
    """The :class:`~distil.data.bundle.SampleSplit` methods of a split that reads (T,) token rows by number.

    A subclass sets ``index`` ((N,) int64 row numbers of the split, in order) and ``block_size`` (T), and
    reads rows with ``_read(rows) -> (inputs (B, T), labels (B, T))``; everything else follows from those.
    """

    index: torch.Tensor
    block_size: int

    def _read(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} out of range for a split of {len(self)}")
        inputs, labels = self._read(self.index[index : index + 1] if index >= 0 else self.index[[index]])
        return {INPUTS: inputs[0], LABELS: labels[0]}

    def read_batch(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs (B, T), labels (B, T)) of the rows at `positions` of this split, in one gather (the
        loader's batched read: the same values as stacking ``split[i]``)."""
        return self._read(self.index[positions])

    @property
    def labels(self) -> torch.Tensor:
        return torch.zeros(len(self), dtype=torch.int64)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.block_size,)

    def head(self, n: int) -> torch.Tensor:
        return self._read(self.index[:n])[0]

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        for b, e in batch_ranges(len(self), batch_size, start, stop):
            inputs, labels = self._read(self.index[b:e])
            yield {INPUTS: inputs, LABELS: labels, INDEX: torch.arange(b, e)}

    def update_hash(self, h: Any) -> None:
        # The header `hash_tensor` writes for the whole (N, T) inputs, then inputs and labels chunk by chunk
        # (the same bytes as `TokenRowSplit`'s for the same ids and labels).
        h.update(f"{torch.int64}:{(len(self), self.block_size)}".encode())
        for batch in self.batches(1024):
            h.update(batch[INPUTS].reshape(-1).view(torch.uint8).numpy())
            h.update(batch[LABELS].reshape(-1).view(torch.uint8).numpy())


class TokenBlockSplit(IndexedTokenRows):
    """Fixed blocks of a memory-mapped token stream, as a :class:`~distil.data.bundle.SampleSplit`.

    ``split[i] -> {"inputs": (T,) int64 ids, "labels": (T,) int64 next-token ids}`` (``IGNORE_INDEX`` where
    the next token is a prompt token); batches are ``(B, T)``. ``labels`` (the interface's per-sample
    labels, used for stratification and class checks) is a zeros ``(N,)`` tensor: blocks have no class.
    Pickles by path, so loader workers reopen the file.

    Args:
        tokens_path: the stream's ``.npy``.
        mask_path: its loss mask ``.npy`` (bool), or None when every token counts.
        block_size: T, the tokens of one sample's inputs.
        index: (N,) int64 block numbers of this split, in order.
        vocab_size: the tokenizer's vocabulary size.
    """

    def __init__(
        self,
        tokens_path: Path,
        mask_path: Path | None,
        block_size: int,
        index: torch.Tensor,
        vocab_size: int,
    ) -> None:
        self.tokens_path = Path(tokens_path)
        self.mask_path = Path(mask_path) if mask_path is not None else None
        self.block_size = block_size
        self.index = index.long()
        self.vocab_size = vocab_size
        self._tokens: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokens"] = state["_mask"] = None
        return state

    def _arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._tokens is None:
            self._tokens = np.load(self.tokens_path, mmap_mode="r", allow_pickle=False)
            if self.mask_path is not None:
                self._mask = np.load(self.mask_path, mmap_mode="r", allow_pickle=False)
        return self._tokens, self._mask

    def _read(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.block_size
        if len(blocks) == 0:  # also an empty split, which has no stream file
            empty = torch.zeros(0, t, dtype=torch.int64)
            return empty, empty.clone()
        tokens, mask = self._arrays()
        starts = blocks.numpy() * t
        offsets = starts[:, None] + np.arange(t + 1)
        ids = torch.from_numpy(tokens[offsets].astype(np.int64)).reshape(len(blocks), t + 1)
        labels = ids[:, 1:].clone()
        if mask is not None:
            labels[~torch.from_numpy(np.asarray(mask[offsets[:, 1:]], dtype=bool))] = IGNORE_INDEX
        return ids[:, :-1].contiguous(), labels

    def take(self, index: torch.Tensor) -> TokenBlockSplit:
        return TokenBlockSplit(
            self.tokens_path, self.mask_path, self.block_size, self.index[index], self.vocab_size
        )


class TokenRowSplit:
    """Rows of token ids held in memory, one sequence each (a conversation, never two), as a
    :class:`~distil.data.bundle.SampleSplit`.

    ``split[i] -> {"inputs": (T,) int64 ids, "labels": (T,) int64 next-token ids}``, ``IGNORE_INDEX`` where
    the next token is not trained (a prompt token, the padding after the sequence); batches are ``(B, T)``,
    as :class:`TokenBlockSplit`'s, so the loop, the losses and the metrics treat both alike. ``labels``
    (the interface's per-sample labels) is a zeros ``(N,)`` tensor.

    Args:
        inputs: (N, T) int64 ids, right-padded.
        targets: (N, T) int64 next-token ids or ``IGNORE_INDEX``.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if inputs.shape != targets.shape or inputs.dim() != 2:
            raise ValueError(
                f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must be one (N, T)"
            )
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {INPUTS: self.inputs[index], LABELS: self.targets[index]}

    def read_batch(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs (B, T), labels (B, T)) of the rows at `positions` (the loader's batched read)."""
        return self.inputs[positions], self.targets[positions]

    @property
    def labels(self) -> torch.Tensor:
        return torch.zeros(len(self), dtype=torch.int64)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (int(self.inputs.shape[1]),)

    def head(self, n: int) -> torch.Tensor:
        return self.inputs[:n]

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        for b, e in batch_ranges(len(self), batch_size, start, stop):
            yield {INPUTS: self.inputs[b:e], LABELS: self.targets[b:e], INDEX: torch.arange(b, e)}

    def take(self, index: torch.Tensor) -> TokenRowSplit:
        return TokenRowSplit(self.inputs[index], self.targets[index])

    def update_hash(self, h: Any) -> None:
        # The same bytes as TokenBlockSplit's for the same ids and labels.
        h.update(f"{torch.int64}:{tuple(self.inputs.shape)}".encode())
        for batch in self.batches(1024):
            h.update(batch[INPUTS].contiguous().reshape(-1).view(torch.uint8).numpy())
            h.update(batch[LABELS].contiguous().reshape(-1).view(torch.uint8).numpy())


# --------------------------------------------------------------------------------------------
# splitting and the bundle


def path_fraction(relative: str) -> float:
    """A stable number in [0, 1) from a file's relative path (the same on every machine and run)."""
    digest = hashlib.sha256(relative.replace(os.sep, "/").encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_files(
    base: Path, files: Sequence[Path], *, val_fraction: float, test_fraction: float = TEST_FRACTION
) -> dict[str, list[Path]]:
    """Whole files into train/val/test by :func:`path_fraction` of the path relative to `base`.

    A file lands in test when its fraction is below `test_fraction`, in val when below `test_fraction +
    val_fraction`, else in train; adding or removing other files moves no file between splits.
    """
    out: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for path in files:
        u = path_fraction(str(path.relative_to(base)))
        out["test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"].append(
            path
        )
    return out


def _check_options(block_size: int, errors: str, val_fraction: float, newlines: str = "normalize") -> None:
    if block_size < 2:
        raise ConfigError(f"block_size must be >= 2 tokens (inputs and their next tokens), got {block_size}.")
    if errors not in ("strict", "replace"):
        raise ConfigError(f"errors must be 'strict' or 'replace', got {errors!r}.")
    if newlines not in NEWLINES:
        raise ConfigError(f"newlines must be 'normalize' or 'keep', got {newlines!r}.")
    if not 0.0 <= val_fraction < 1.0 - TEST_FRACTION:
        raise ConfigError(f"val_fraction must be in [0, {1 - TEST_FRACTION}), got {val_fraction}.")


def _num_blocks(stream: TokenStream, block_size: int) -> int:
    return max(stream.length - 1, 0) // block_size


def load_text(
    root: str | Path,
    *,
    name: str = "text",
    tokenizer: str | Tokenizer = "byte",
    block_size: int = DEFAULT_BLOCK_SIZE,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    val_fraction: float = 0.1,
    limit: int | None = None,
    errors: str = "strict",
    split_by: str = "auto",
    cache_dir: str | Path | None = None,
    files: Sequence[Path] | None = None,
    trust_code: bool = False,
    newlines: str = "normalize",
) -> DataBundle:
    """A language-modelling bundle of token blocks from a text corpus.

    Args:
        root: a file, a folder (searched with `patterns`), or ``folder/**/*.ext``.
        name: the bundle's name.
        tokenizer: a registered tokenizer name or a :class:`Tokenizer`.
        block_size: T, the tokens of one sample (each block holds T + 1, inputs and shifted labels).
        patterns: globs of a folder root.
        val_fraction: the share held out for validation (whole files or blocks, as for test).
        limit: keep at most this many train blocks and ``max(1, limit // 5)`` val/test blocks (the first).
        errors: "strict" (invalid UTF-8 is an error) or "replace".
        split_by: "files" (whole files by a hash of their relative path: 5% test, `val_fraction` val),
            "blocks" (the last 5% of the stream's blocks test, those before val), or "auto" (files when
            every split gets at least one file, else blocks).
        cache_dir: where token streams are cached; None: :func:`default_text_cache_dir`.
        files: the corpus's files, when chosen by the caller (`root` is then the folder they are under).
        trust_code: let an ``hf:DIR`` tokenizer that names its own code run it (``--trust-code``).
        newlines: "normalize" (plain-text files lose a leading byte order mark, CRLF/CR become LF) or
            "keep" (see :data:`NEWLINES`).

    Raises:
        ConfigError: block_size < 2, an unknown `errors`/`split_by`/`newlines`, val_fraction out of range,
            or a tokenizer without an end-of-sequence token (documents are joined with it).
        DataError: bad files, an empty corpus, or a split shorter than one block.
    """
    _check_options(block_size, errors, val_fraction, newlines)
    if split_by not in ("auto", "files", "blocks"):
        raise ConfigError(f"split_by must be 'auto', 'files' or 'blocks', got {split_by!r}.")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of train blocks or None, got {limit}.")
    tok = get_tokenizer(tokenizer, trust_remote_code=trust_code)
    _ = tok.eos_id  # documents are joined with it: a tokenizer without one stops here, before any read
    if files is None:
        base, files = find_files(root, patterns)
    else:
        base, files = Path(root), sorted(files)
        if not files:
            raise DataError(f"dataset {name!r}: no files under {str(root)!r}.")
    groups = split_files(base, files, val_fraction=val_fraction)
    need = ["train", "test"] + (["val"] if val_fraction > 0 else [])
    by_files = split_by == "files" or (split_by == "auto" and all(groups[s] for s in need))
    if split_by == "files" and not all(groups[s] for s in need):
        counts = {s: len(groups[s]) for s in groups}
        raise DataError(
            f"text corpus {str(root)!r}: splitting {len(files)} files by path gives {counts}; every split "
            "needs a file. Add files, or use split_by='blocks'."
        )

    def stream_of(paths: Sequence[Path]) -> TokenStream:
        return build_stream(
            paths, tok, cache_dir=cache_dir, errors=errors, block_size=block_size, newlines=newlines
        )

    splits: dict[str, TokenBlockSplit] = {}
    skipped = 0
    if by_files:
        for split_name in ("train", "val", "test"):
            if not groups[split_name]:
                splits[split_name] = _empty_split(tok, block_size)
                continue
            stream = stream_of(groups[split_name])
            skipped += stream.skipped_empty
            splits[split_name] = _blocks(stream, block_size, tok, name, split_name, root)
    else:
        stream = stream_of(files)
        skipped = stream.skipped_empty
        whole = _blocks(stream, block_size, tok, name, "whole", root)
        n = len(whole)
        n_test = max(1, round(n * TEST_FRACTION))
        n_val = round(n * val_fraction)
        if n - n_test - n_val < 1:
            raise DataError(
                f"dataset {name!r}: the corpus {str(root)!r} gives {n} block(s) of {block_size} tokens, too "
                f"few for train, val and test. Add text or lower block_size (now {block_size})."
            )
        cut_val, cut_test = n - n_test - n_val, n - n_test
        splits = {
            "train": whole.take(torch.arange(cut_val)),
            "val": whole.take(torch.arange(cut_val, cut_test)),
            "test": whole.take(torch.arange(cut_test, n)),
        }
    if limit is not None:
        small = max(1, limit // 5)
        splits = {
            k: s.take(torch.arange(min(len(s), limit if k == "train" else small))) for k, s in splits.items()
        }
    extra = {
        "tokenizer": tok.fingerprint,
        # The registered name rebuilds the tokenizer later (a report decoding greedy samples).
        "tokenizer_name": tokenizer if isinstance(tokenizer, str) else "",
        "vocab_size": str(tok.vocab_size),
        "block_size": str(block_size),
        "split_by": "files" if by_files else "blocks",
        "files": str(len(files)),
    }
    if skipped:
        extra["skipped_empty_files"] = str(skipped)
    # Recorded in checkpoint sidecars: `distil eval` on the checkpoint cuts the same blocks.
    options = {
        "block_size": block_size,
        "tokenizer": tokenizer if isinstance(tokenizer, str) else None,
        "errors": errors,
        "split_by": split_by,
        "newlines": newlines,
    }
    return token_bundle(name, splits, str(root), extra, options, eos_id=tok.eos_id)


EOS_ID = "eos_id"
"""``DataBundle.extra`` key of a token bundle: the end-of-sequence id (what ends a generated completion)."""


def token_bundle(
    name: str,
    splits: dict[str, Any],
    source: str,
    extra: dict[str, str],
    options: dict[str, Any],
    *,
    eos_id: int,
) -> DataBundle:
    """The checked `DataBundle` of a language-modelling dataset (text, chat, arithmetic): its train, val
    and test token splits, no classes or normalisation, and the reader `options` that rebuild the same
    samples (recorded in checkpoint sidecars, reused by `distil eval`). `extra` also records `eos_id`
    (:data:`EOS_ID`), which ends a completion generated from a row's prompt.

    Raises:
        DataError: a bundle that `validate_bundle` refuses.
    """
    extra = {**extra, EOS_ID: str(eos_id)}
    bundle = DataBundle(
        name=name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        class_names=[],
        mean=(),
        std=(),
        source=source,
        extra=extra,
        task=LANGUAGE_MODELING,
        options=options,
    )
    validate_bundle(bundle)
    return bundle


def _empty_split(tok: Tokenizer, block_size: int) -> TokenBlockSplit:
    # An empty split still needs a stream file to point at; no block of it is ever read.
    return TokenBlockSplit(
        Path(os.devnull), None, block_size, torch.zeros(0, dtype=torch.int64), tok.vocab_size
    )


def _blocks(
    stream: TokenStream, block_size: int, tok: Tokenizer, name: str, split_name: str, root: str | Path
) -> TokenBlockSplit:
    n = _num_blocks(stream, block_size)
    if n == 0:
        what = "the corpus" if split_name == "whole" else f"the {split_name} split of the corpus"
        raise DataError(
            f"dataset {name!r}: {what} {str(root)!r} holds {stream.length} token(s), fewer than one block of "
            f"{block_size} + 1. Add text, or lower block_size (e.g. block_size={max(2, stream.length // 2)})."
            if stream.length
            else f"dataset {name!r}: {what} {str(root)!r} holds no text (empty files: {stream.skipped_empty}). "
            "Give files with text."
        )
    return TokenBlockSplit(stream.tokens_path, stream.mask_path, block_size, torch.arange(n), tok.vocab_size)


# --------------------------------------------------------------------------------------------
# the registered datasets


def stdlib_root() -> Path:
    """The running Python's standard library folder (its `.py` sources ship with every Python)."""
    return Path(sysconfig.get_paths()["stdlib"])


_STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's `.py` files, without test suites and installed packages, sorted."""
    base = root or stdlib_root()
    return sorted(
        p
        for p in base.glob("**/*.py")
        if p.is_file() and not (set(p.relative_to(base).parts[:-1]) & _STDLIB_SKIP)
    )


class TextCorpus:
    """A reader's `LazyDataset` for text: builds the bundle with `load_dataset`'s val_fraction and limit
    and the recipe's text options (`data.block_size`, `tokenizer`, `split_by`, `errors`, `newlines`;
    `trust_code` from ``--trust-code``, for a tokenizer with its own code)."""

    def __init__(
        self,
        root: str | Path,
        name_hint: str,
        split_by: str,
        files: Sequence[Path] | None = None,
        *,
        block_size: int | None = None,
        tokenizer: str | None = None,
        errors: str | None = None,
        trust_code: bool = False,
        newlines: str | None = None,
    ):
        self.root, self.name_hint, self.split_by, self.files = root, name_hint, split_by, files
        self.block_size = block_size or DEFAULT_BLOCK_SIZE
        self.tokenizer = tokenizer or "byte"
        self.errors = errors or "strict"
        self.trust_code = trust_code
        self.newlines = newlines or "normalize"

    def build_bundle(self, name: str, *, val_fraction: float, seed: int, limit: int | None) -> DataBundle:
        del seed  # the splits are fixed by path hash or position, not by a seed
        return load_text(
            self.root,
            name=name,
            tokenizer=self.tokenizer,
            block_size=self.block_size,
            val_fraction=val_fraction,
            limit=limit,
            errors=self.errors,
            split_by=self.split_by,
            files=self.files,
            trust_code=self.trust_code,
            newlines=self.newlines,
        )


@DATASETS.register("text")
def text_reader(
    root: Path | None,
    block_size: int | None = None,
    tokenizer: str | None = None,
    split_by: str | None = None,
    errors: str | None = None,
    trust_code: bool = False,
    newlines: str | None = None,
) -> TextCorpus:
    """Plain text / JSONL: `data.root` is a file, a folder, or ``folder/**/*.ext``; byte tokenizer, blocks of
    256, whole files held out when there are enough (see :func:`load_text` for every option)."""
    if root is None:
        raise DataError("dataset 'text' needs data.root: a file, a folder or folder/**/*.txt.")
    return TextCorpus(
        root,
        "text",
        split_by or "auto",
        block_size=block_size,
        tokenizer=tokenizer,
        errors=errors,
        trust_code=trust_code,
        newlines=newlines,
    )


@DATASETS.register("python-stdlib")
def python_stdlib_reader(
    root: Path | None,
    block_size: int | None = None,
    tokenizer: str | None = None,
    split_by: str | None = None,
    errors: str | None = None,
    trust_code: bool = False,
    newlines: str | None = None,
) -> TextCorpus:
    """The running Python's standard library sources (no download): whole modules held out as test and
    val by a hash of their path; `root` may point at another copy of a standard library."""
    base = root or stdlib_root()
    files = stdlib_files(base)
    if not files:
        raise DataError(
            f"no .py files under {base} (Python {sys.version.split()[0]}); this Python ships without its "
            "standard library sources. Give data.root pointing at a folder of .py files."
        )
    return TextCorpus(
        base,
        "python-stdlib",
        split_by or "files",
        files,
        block_size=block_size,
        tokenizer=tokenizer,
        errors=errors,
        trust_code=trust_code,
        newlines=newlines,
    )


PYTHON_DOCS_ROOT = Path("/usr/share/doc/python3.11/html/_sources")


def python_docs_files(root: Path) -> list[Path]:
    """The reStructuredText sources of the Python documentation (``*.rst.txt``) under `root`, sorted."""
    return sorted(p for p in root.glob("**/*.rst.txt") if p.is_file())


@DATASETS.register("python-docs")
def python_docs_reader(
    root: Path | None,
    block_size: int | None = None,
    tokenizer: str | None = None,
    split_by: str | None = None,
    errors: str | None = None,
    trust_code: bool = False,
    newlines: str | None = None,
) -> TextCorpus:
    """The Python documentation's prose: the ``.rst.txt`` sources of Debian's python3.11-doc package
    (``/usr/share/doc/python3.11/html/_sources``, about 500 files, 11 MB of English), whole files held
    out as test and val by a hash of their path; `root` may point at another ``html/_sources`` folder."""
    base = root or PYTHON_DOCS_ROOT
    files = python_docs_files(base) if base.is_dir() else []
    if not files:
        raise DataError(
            f"no Python documentation sources (*.rst.txt) under {base}. Install them with "
            "`apt-get install python3.11-doc` (Debian/Ubuntu), or give data.root pointing at the "
            "html/_sources folder of a Python documentation build."
        )
    return TextCorpus(
        base,
        "python-docs",
        split_by or "files",
        files,
        block_size=block_size,
        tokenizer=tokenizer,
        errors=errors,
        trust_code=trust_code,
        newlines=newlines,
    )


__all__ = [
    "LANGUAGE_MODELING",
    "Document",
    "TokenBlockSplit",
    "TokenRowSplit",
    "TokenStream",
    "build_stream",
    "cache_key",
    "encode_documents",
    "find_files",
    "load_text",
    "path_fraction",
    "python_docs_files",
    "read_documents",
    "read_record_documents",
    "read_text",
    "record_document",
    "split_files",
    "stdlib_files",
    "stdlib_root",
]
