"""A local Hugging Face tokenizer behind distil's :class:`~distil.data.tokenize.Tokenizer` protocol.

``get_tokenizer("hf:DIR")`` reads the tokenizer files of a ``save_pretrained`` directory (local files
only, nothing is downloaded). Its fingerprint is a hash of those files, so token caches built with one
tokenizer are never reused with another, even under the same directory name. A tokenizer whose config
names its own Python code (``auto_map``) is refused unless the caller trusts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distil.errors import ConfigError
from distil.hf_common import require_transformers

# The files that decide how text becomes ids (model weights and config.json do not).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
PREFIX = "hf:"


def tokenizer_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The tokenizer files present in `directory`, sorted by name."""
    root = Path(directory)
    return sorted((root / name for name in _TOKENIZER_FILES if (root / name).is_file()), key=lambda p: p.name)


# Keys transformers writes into tokenizer_config.json about where and how it was loaded, not how it splits
# text: a tokenizer saved again (e.g. into a distilled model's directory) keeps its fingerprint.
_PROVENANCE = frozenset(
    {"name_or_path", "is_local", "local_files_only", "_commit_hash", "cache_dir", "revision", "token"}
)


def _canonical(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix != ".json":
        return data
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return data
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in _PROVENANCE}
    return json.dumps(value, sort_keys=True, ensure_ascii=False).encode()


def tokenizer_fingerprint(directory: str | os.PathLike[str]) -> str:
    """``hf-`` + the SHA-256 (first 16 hex digits) of the tokenizer files' names and contents.

    JSON files are hashed in a canonical form without the keys that only record where the tokenizer was
    loaded from, so saving a tokenizer again keeps its fingerprint, and any change to its vocabulary,
    merges or special tokens changes it.
    """
    digest = hashlib.sha256()
    for path in tokenizer_files(directory):
        digest.update(path.name.encode() + b"\0" + _canonical(path) + b"\0")
    return f"hf-{digest.hexdigest()[:16]}"


class HFTokenizer:
    """A ``transformers`` tokenizer read from a local directory, seen as a distil tokenizer.

    Args:
        path: a directory holding the tokenizer files (e.g. the teacher's ``save_pretrained`` output).
        trust_remote_code: let a tokenizer that names its own code run it (only when the user asked).

    Raises:
        ConfigError: no such directory or tokenizer files, or custom code without trust. A tokenizer
            without an end-of-sequence token (BERT's) loads: only :attr:`eos_id`, which language-modelling
            data joins documents with, refuses it.
    """

    def __init__(self, path: str | os.PathLike[str], *, trust_remote_code: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_dir() or not tokenizer_files(self.path):
            raise ConfigError(
                f"tokenizer {PREFIX}{path}: {str(self.path)!r} is not a directory with tokenizer files "
                f"({', '.join(_TOKENIZER_FILES[:3])}, ...); give the directory save_pretrained wrote."
            )
        config_file = self.path / "tokenizer_config.json"
        auto_map = None
        if config_file.is_file():
            try:
                auto_map = json.loads(config_file.read_text(encoding="utf-8")).get("auto_map")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                raise ConfigError(f"{str(config_file)!r} is not a valid tokenizer config: {exc}") from None
        if auto_map and not trust_remote_code:
            raise ConfigError(
                f"{str(config_file)!r} has an auto_map: the tokenizer is Python code in that directory, which "
                "distil does not run unless you trust its author (--trust-code, trust_code: true in the "
                "recipe)."
            )
        if auto_map:
            warnings.warn(
                f"running the tokenizer code in {str(self.path)!r} (--trust-code): only do this for files whose "
                "author you trust.",
                UserWarning,
                stacklevel=2,
            )
        transformers = require_transformers()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.hf: Any = transformers.AutoTokenizer.from_pretrained(
                    str(self.path), local_files_only=True, trust_remote_code=trust_remote_code
                )
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"transformers cannot load the tokenizer in {str(self.path)!r}: {exc}"
            ) from None
        self._fingerprint = tokenizer_fingerprint(self.path)

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens included (``len(tokenizer)``)."""
        return len(self.hf)

    @property
    def eos_id(self) -> int:
        """The id that ends a document (language-modelling data joins documents with it).

        Raises:
            ConfigError: the tokenizer has none (an encoder's, such as BERT's: fine for classification).
        """
        if self.hf.eos_token_id is None:
            raise ConfigError(
                f"the tokenizer in {str(self.path)!r} has no eos_token, which language-modelling data needs: "
                "documents are joined into one token stream with it. Set one (tokenizer.eos_token = '...', "
                "e.g. its [SEP]) and save it again; text classification does not need one."
            )
        return int(self.hf.eos_token_id)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def bos_id(self) -> int | None:
        """The id a classifier's sequence starts with: the tokenizer's CLS token (BERT), else its BOS."""
        for token_id in (self.hf.cls_token_id, self.hf.bos_token_id):
            if token_id is not None:
                return int(token_id)
        return None

    @property
    def pad_id(self) -> int | None:
        """The id that pads a sequence to its block (None: the tokenizer has no pad token)."""
        return None if self.hf.pad_token_id is None else int(self.hf.pad_token_id)

    def framing(self) -> tuple[list[int], list[int]]:
        """The special ids the tokenizer puts before and after one sequence (``add_special_tokens``).

        BERT's ``([CLS], [SEP])``, RoBERTa's ``(<s>, </s>)``, Llama's ``(<s>, )``: found by encoding a probe
        with and without special tokens. A tokenizer that adds none (GPT-2's) starts with its CLS or BOS
        token (:attr:`bos_id`) when it has one, as a classifier's first position.
        """
        probe = "a b"
        plain = self.encode(probe)
        full: list[int] = self.hf(probe, add_special_tokens=True, verbose=False)["input_ids"]
        if plain and len(full) > len(plain):
            for i in range(len(full) - len(plain) + 1):
                if full[i : i + len(plain)] == plain:
                    return full[:i], full[i + len(plain) :]
        start = self.bos_id  # adds nothing (or specials that change the text's ids): the start token alone
        return ([] if start is None else [start]), []

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, without special tokens (whole corpora: no length warning)."""
        ids: list[int] = self.hf(text, add_special_tokens=False, verbose=False)["input_ids"]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`, special tokens skipped."""
        text: str = self.hf.decode([int(i) for i in ids], skip_special_tokens=True)
        return text

    def __repr__(self) -> str:
        return f"HFTokenizer({str(self.path)!r}, {self.fingerprint})"


def train_byte_bpe(
    texts: Sequence[str],
    vocab_size: int,
    directory: str | os.PathLike[str],
    *,
    eos_token: str = "<|endoftext|>",
    min_frequency: int = 2,
) -> str:
    """Train a byte-level BPE on `texts` (``tokenizers``, in memory) and save it where ``hf:DIR`` reads it.

    The tokenizer adds no prefix space and no normalizer, so its tokens spell back exactly the text they
    encode (what cross-tokenizer alignment needs, `distil.data.alignment`); `eos_token` is its one special
    token (id 0).

    Args:
        texts: the training text.
        vocab_size: the vocabulary size (at least the 256 bytes plus the special token).
        directory: where ``tokenizer.json`` and ``tokenizer_config.json`` are written (created).
        eos_token: the end-of-sequence token.
        min_frequency: the fewest occurrences a merge needs.

    Returns:
        The tokenizer's name for `get_tokenizer`: ``"hf:" + directory``.
    """
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)
    transformers = require_transformers()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=eos_token)
    Path(directory).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return f"{PREFIX}{directory}"


__all__ = ["PREFIX", "HFTokenizer", "tokenizer_files", "tokenizer_fingerprint", "train_byte_bpe"]
