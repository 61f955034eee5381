"""Tokenizers for text data: a bundled byte-level one that needs no files, and the interface others meet.

A tokenizer turns a string into token ids and back. Text corpora (`distil.data.text`) cache token ids on
disk keyed by the tokenizer's `fingerprint`, so two tokenizers that split text differently never share a
cache, and a teacher and a student must use tokenizers with the same fingerprint
(:func:`check_same_tokenizer`): per-token distillation compares distributions over one vocabulary.

A local Hugging Face tokenizer is used through an adapter with the same five members:
``get_tokenizer("hf:DIR")`` (:class:`distil.data.hf_tokenizer.HFTokenizer`, ``pip install 'distil[lm]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from distil.errors import ConfigError
from distil.registry import Registry


@runtime_checkable
class Tokenizer(Protocol):
    """What text data needs from a tokenizer.

    * ``vocab_size``: ids lie in ``[0, vocab_size)``;
    * ``eos_id``: the id that ends a document (language-modelling data joins documents with it); a
      tokenizer without one (an encoder's, such as BERT's) raises :class:`ConfigError` here, and is still
      fine for classification, which never joins documents;
    * ``fingerprint``: a stable name + version that changes whenever the ids of some text would (the key
      of token caches);
    * ``encode(text) -> list[int]`` (no special tokens added); ``decode(ids) -> str``.

    Classification rows also use, when present, ``pad_id``, and ``framing() -> (head ids, tail ids)``
    (the special tokens around one sequence, e.g. BERT's [CLS] and [SEP]) or else ``bos_id`` as the first
    id (:func:`distil.data.textcls.row_format`).
    """

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0..255 are the bytes, then BOS (256), EOS (257) and PAD (258).

    Needs no files and covers every string, so any corpus tokenizes; sequences are about as long as the
    text in bytes. `decode` skips the special ids and replaces bytes that are not valid UTF-8 (a sequence
    cut mid-character, or a model's sample) with U+FFFD instead of failing.
    """

    BYTES = 256
    BOS = 256
    EOS = 257
    PAD = 258
    VERSION = 1

    @property
    def vocab_size(self) -> int:
        return self.BYTES + 3

    @property
    def eos_id(self) -> int:
        return self.EOS

    @property
    def bos_id(self) -> int:
        return self.BOS

    @property
    def pad_id(self) -> int:
        return self.PAD

    @property
    def fingerprint(self) -> str:
        return f"byte-v{self.VERSION}"

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of `text` as ids (surrogates, which UTF-8 cannot hold, raise UnicodeEncodeError)."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`: special ids are dropped, invalid UTF-8 becomes U+FFFD.

        Raises:
            ValueError: an id outside ``[0, vocab_size)``.
        """
        out = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < self.BYTES:
                out.append(i)
            elif not self.BYTES <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the byte tokenizer's [0, {self.vocab_size})")
        return out.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"ByteTokenizer({self.fingerprint})"


TOKENIZERS: Registry[type] = Registry("tokenizer", error=ConfigError)
TOKENIZERS.register("byte")(ByteTokenizer)


def get_tokenizer(name: str | Tokenizer = "byte", *, trust_remote_code: bool = False) -> Tokenizer:
    """A tokenizer by registered name (``"byte"``), ``"hf:DIR"`` (a local Hugging Face tokenizer), or
    `name` itself when it already is one.

    Args:
        name: the tokenizer.
        trust_remote_code: let an ``hf:DIR`` tokenizer that names its own code run it (``--trust-code``).

    Raises:
        ConfigError: an unknown name (the registered ones and the closest match are listed), or an
            ``hf:DIR`` that cannot be loaded.
    """
    if isinstance(name, Tokenizer):
        return name
    if isinstance(name, str) and name.startswith("hf:"):
        from distil.data.hf_tokenizer import HFTokenizer

        return HFTokenizer(name[3:], trust_remote_code=trust_remote_code)
    tokenizer: Tokenizer = TOKENIZERS.get(name)()
    return tokenizer


def check_same_tokenizer(teacher: Tokenizer, student: Tokenizer) -> None:
    """Refuse a teacher and a student whose tokenizers differ: their per-token outputs would not compare.

    Raises:
        ConfigError: naming both fingerprints and vocabulary sizes, with the fix.
    """
    if teacher.fingerprint != student.fingerprint or teacher.vocab_size != student.vocab_size:
        raise ConfigError(
            f"the teacher's tokenizer ({teacher.fingerprint}, vocabulary {teacher.vocab_size}) differs from "
            f"the student's ({student.fingerprint}, vocabulary {student.vocab_size}); token-level "
            "distillation compares distributions over one vocabulary. Give both models the same tokenizer "
            "(e.g. a student built with the teacher's tokenizer and vocab_size)."
        )


__all__ = ["TOKENIZERS", "ByteTokenizer", "Tokenizer", "check_same_tokenizer", "get_tokenizer"]
