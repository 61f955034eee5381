"""Chat and instruction data: one conversation per row, the loss on the assistant's tokens only.

Records (``.jsonl``, ``.csv``, ``.tsv``, read by :func:`distil.data.records.read_records`; a file, a
folder of them, or ``folder/**/*.jsonl``), one conversation each:

* ``{"messages": [{"role": "system", "content": ...}, {"role": "user", ...}, {"role": "assistant", ...},
  ...]}``: the format of TRL and the Hugging Face hub (any role names; ``assistant`` messages are trained);
* ``{"prompt": ..., "completion": ...}`` with strings: a user message and the assistant's answer; with
  lists of messages (TRL's conversational prompt-completion): the prompt's messages, then the
  completion's.

A conversation needs at least one assistant message (else there is nothing to train on: a
:class:`DataError` naming the file and line).

Rendering (``data.chat_template``):

* ``auto`` (default): a Hugging Face tokenizer (``hf:DIR``) renders with its own chat template
  (``apply_chat_template``); one without a template is a :class:`ConfigError` naming the fixes. The byte
  tokenizer, which has no template, uses the built-in one.
* ``builtin``: every message is ``<|ROLE|>`` + newline + its content + an end: a newline after a system or
  user message, the tokenizer's EOS id after an assistant message, so a model learns to stop. The pieces
  (header, content, end) are tokenized one by one and their ids concatenated.

Masking: a token is trained (its label is its id, else ``IGNORE_INDEX``) when an assistant message added
it: the built-in template's assistant content and EOS, not its ``<|assistant|>`` header; with a tokenizer's
template, the text that ``messages[:i + 1]`` renders beyond ``messages[:i]`` rendered with
``add_generation_prompt=True`` (so the assistant header the template puts at generation time is prompt,
and what follows, the end-of-turn marker included, is trained). The pieces are found by rendering the
conversation one message at a time; a template whose earlier text changes once a later message follows
is a :class:`DataError` (use ``builtin``). The rendered text is tokenized whole, and the pieces' ids are
used only when they agree with it; where they do not (a tokenizer merging across a piece boundary), the
pieces are tokenized one by one instead and counted (``extra["tokenized_by_piece"]``).

Rows: a conversation's ids ``c`` become one row of ``T = block_size`` inputs ``c[:T]`` and labels
``c[1:T + 1]`` (``IGNORE_INDEX`` where the next token is not trained), right-padded with the tokenizer's pad
id (else its EOS id) and ``IGNORE_INDEX``: two conversations never share a row, and a causal model's real
positions never see the padding after them. A conversation longer than ``T + 1`` tokens is refused
(``data.on_long: refuse``, the default: a :class:`DataError` naming its file and line, its length and the
fixes) or cut to its first ``T + 1`` tokens (``truncate``; counted in ``extra["truncated"]`` and said in a
one-line notice; one left without a trained token in the block is dropped and counted in
``extra["dropped"]``).

Splits: by a hash of each conversation's messages (:data:`TEST_FRACTION` test, ``val_fraction`` val, an
identical conversation always in one split) when that gives every split a conversation, else by position
(the last ones test, those before val). ``limit`` keeps the first rows. Rows are held in memory and built
on each load (no disk cache).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distil.data.batch import IGNORE_INDEX
from distil.data.bundle import DataBundle
from distil.data.records import RECORD_SUFFIXES, read_records
from distil.data.registry import DATASETS
from distil.data.text import DEFAULT_BLOCK_SIZE, TokenRowSplit, find_files, path_fraction, token_bundle
from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.errors import ConfigError, DataError

ASSISTANT = "assistant"
"""The role whose messages are trained."""
CHAT_TEMPLATES = ("auto", "builtin")
"""``data.chat_template``: the tokenizer's own template (the byte tokenizer: the built-in one), or the
built-in one for any tokenizer."""
ON_LONG = ("refuse", "truncate")
"""``data.on_long``: what a conversation longer than a row does."""
TEST_FRACTION = 0.05


@dataclass(frozen=True)
class Message:
    """One turn: who speaks and what they say."""

    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    """The messages of one record, with where it came from (``file:line``, for messages)."""

    messages: tuple[Message, ...]
    where: str

    def as_dicts(self, stop: int | None = None) -> list[dict[str, str]]:
        """The first `stop` messages (all: None) as ``{"role", "content"}`` dicts (what templates read)."""
        return [{"role": m.role, "content": m.content} for m in self.messages[:stop]]


# --------------------------------------------------------------------------------------------
# reading

_FORMAT_FIX = (
    'each record needs "messages" (a list of {"role": ..., "content": ...} objects), or "prompt" and '
    '"completion" (strings, or lists of messages); in a .csv/.tsv file, prompt and completion columns.'
)


def _messages(where: str, key: str, value: Any) -> list[Message]:
    if not isinstance(value, list):
        raise DataError(
            f"{where}: {key!r} is a {type(value).__name__}, not a list of messages; {_FORMAT_FIX}"
        )
    out = []
    for i, item in enumerate(value):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("role"), str)
            and isinstance(item.get("content"), str)
        ):
            raise DataError(
                f"{where}: {key}[{i}] is {json.dumps(item)[:80]}; each message is an object with a string "
                '"role" (system, user, assistant, ...) and a string "content".'
            )
        out.append(Message(item["role"], item["content"]))
    return out


def record_conversation(where: str, record: dict[str, Any]) -> Conversation:
    """The conversation of one record: its ``messages``, or its ``prompt`` and ``completion``.

    Raises:
        DataError: neither format, a malformed message, or no assistant message; naming the record.
    """
    if "messages" in record:
        messages = _messages(where, "messages", record["messages"])
    elif "prompt" in record and "completion" in record:
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            messages = [Message("user", prompt), Message(ASSISTANT, completion)]
        else:
            messages = _messages(where, "prompt", prompt) + _messages(where, "completion", completion)
    else:
        raise DataError(f"{where} has keys {sorted(record)}; {_FORMAT_FIX}")
    if not any(m.role == ASSISTANT for m in messages):
        raise DataError(
            f"{where}: no message has role 'assistant', so nothing in it would be trained; give each "
            "conversation at least one assistant answer, or drop the record."
        )
    return Conversation(tuple(messages), where)


def read_conversations(path: Path, errors: str = "strict") -> list[Conversation]:
    """The conversations of a JSONL, CSV or TSV file, one per record.

    Raises:
        DataError: bad UTF-8, a malformed line, or a record that is not a conversation (file and line).
    """
    return [record_conversation(where, record) for where, record in read_records(path, errors)]


# --------------------------------------------------------------------------------------------
# rendering


@dataclass(frozen=True)
class Rendered:
    """A conversation's token ids, which of them are trained, and whether its pieces were tokenized one by
    one because the whole text tokenizes differently."""

    ids: list[int]
    trained: list[bool]
    by_piece: bool = False


def _encode(tokenizer: Tokenizer, text: str, where: str) -> list[int]:
    try:
        return list(tokenizer.encode(text)) if text else []
    except UnicodeEncodeError as exc:
        raise DataError(f"{where}: the tokenizer cannot encode this text ({exc}).") from exc


def render_builtin(conversation: Conversation, tokenizer: Tokenizer) -> Rendered:
    """The built-in template: ``<|ROLE|>\\n`` + content + (``\\n``, or EOS after an assistant message), the
    assistant's content and EOS trained; each piece tokenized on its own."""
    ids: list[int] = []
    trained: list[bool] = []

    def add(piece: list[int], train: bool) -> None:
        ids.extend(piece)
        trained.extend([train] * len(piece))

    where = conversation.where
    for m in conversation.messages:
        answer = m.role == ASSISTANT
        add(_encode(tokenizer, f"<|{m.role}|>\n", where), False)
        add(_encode(tokenizer, m.content, where), answer)
        add([tokenizer.eos_id] if answer else _encode(tokenizer, "\n", where), answer)
    return Rendered(ids, trained)


def _apply_template(hf: Any, conversation: Conversation, stop: int, generation: bool) -> str:
    from jinja2 import TemplateError

    try:
        text = hf.apply_chat_template(
            conversation.as_dicts(stop), tokenize=False, add_generation_prompt=generation
        )
    except (TemplateError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise DataError(
            f"{conversation.where}: the tokenizer's chat template cannot render this conversation "
            f"({type(exc).__name__}: {exc}); fix the record (e.g. roles in the order the template expects), "
            "or use data.chat_template: builtin."
        ) from exc
    return str(text)


def template_pieces(hf: Any, conversation: Conversation) -> list[tuple[str, bool]]:
    """The rendered text of a conversation cut into pieces ``(text, trained)``, found by rendering it one
    message at a time with a Hugging Face tokenizer's chat template (`hf`, the transformers tokenizer).

    Before an assistant message, ``messages[:i]`` with the generation prompt gives the untrained header;
    the rest of ``messages[:i + 1]`` is the trained answer.

    Raises:
        DataError: the template renders earlier messages differently once later ones follow, or cannot
            render the conversation.
    """
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(conversation.messages):
        answer = message.role == ASSISTANT
        steps = [(i, True, False), (i + 1, False, True)] if answer else [(i + 1, False, False)]
        for stop, generation, train in steps:
            text = _apply_template(hf, conversation, stop, generation) if stop else ""
            if not text.startswith(done):
                raise DataError(
                    f"{conversation.where}: the tokenizer's chat template renders the first {len(done)} "
                    f"characters differently once message {i + 1} ({message.role}) follows, so the assistant's "
                    "tokens cannot be found by rendering turn by turn; use data.chat_template: builtin."
                )
            if len(text) > len(done):
                pieces.append((text[len(done) :], train))
            done = text
    return pieces


def render_with_template(conversation: Conversation, tokenizer: Any) -> Rendered:
    """A conversation through a Hugging Face tokenizer's chat template (:func:`template_pieces`): the whole
    text tokenized once; the pieces' ids used only when their concatenation is the same ids, else the pieces
    tokenized one by one (``by_piece``), so a trained span never holds a token of the prompt."""
    pieces = template_pieces(tokenizer.hf, conversation)
    where = conversation.where
    parts = [_encode(tokenizer, text, where) for text, _ in pieces]
    joined = [i for part in parts for i in part]
    whole = _encode(tokenizer, "".join(text for text, _ in pieces), where)
    trained = [train for part, (_, train) in zip(parts, pieces, strict=True) for _ in part]
    return Rendered(joined, trained, by_piece=joined != whole)


def chat_renderer(tokenizer: Tokenizer, chat_template: str) -> tuple[str, Any]:
    """The template a tokenizer renders with, ``("tokenizer" | "builtin", render(conversation))``.

    Raises:
        ConfigError: an unknown `chat_template`, or ``auto`` with a Hugging Face tokenizer that has no chat
            template.
    """
    if chat_template not in CHAT_TEMPLATES:
        raise ConfigError(f"data.chat_template must be one of {list(CHAT_TEMPLATES)}, got {chat_template!r}.")
    hf = getattr(tokenizer, "hf", None)
    if chat_template == "builtin" or hf is None:
        return "builtin", lambda c: render_builtin(c, tokenizer)
    if not getattr(hf, "chat_template", None):
        raise ConfigError(
            f"the tokenizer {tokenizer.fingerprint} ({getattr(tokenizer, 'path', '')}) has no chat template, "
            "which chat data is rendered with. Set one (tokenizer.chat_template = '...jinja...', then "
            "save_pretrained), or set data.chat_template: builtin (<|role|> headers, EOS after each answer; "
            "see docs/lm.md)."
        )
    return "tokenizer", lambda c: render_with_template(c, tokenizer)


# --------------------------------------------------------------------------------------------
# rows


@dataclass(frozen=True)
class ChatRows:
    """The rows of some conversations and what happened to the long ones."""

    split: TokenRowSplit
    truncated: int
    dropped: int
    by_piece: int


def pad_id_of(tokenizer: Tokenizer) -> int:
    """The id rows are padded with: the tokenizer's pad id, else its EOS id (padding is never trained)."""
    pad = getattr(tokenizer, "pad_id", None)
    return int(pad) if pad is not None else tokenizer.eos_id


def conversation_rows(
    conversations: Sequence[Conversation],
    tokenizer: Tokenizer,
    *,
    block_size: int,
    chat_template: str = "auto",
    on_long: str = "refuse",
) -> ChatRows:
    """One row per conversation: ``T = block_size`` inputs and next-token labels, trained on the assistant's
    tokens only (see the module docstring).

    Raises:
        ConfigError: an unknown `on_long` or `chat_template`, or a tokenizer without a chat template.
        DataError: a conversation longer than a row with ``on_long="refuse"``, one without a trained token,
            or one the template cannot render.
    """
    if on_long not in ON_LONG:
        raise ConfigError(f"data.on_long must be one of {list(ON_LONG)}, got {on_long!r}.")
    _, render = chat_renderer(tokenizer, chat_template)
    pad = pad_id_of(tokenizer)
    inputs: list[list[int]] = []
    labels: list[list[int]] = []
    truncated = dropped = by_piece = 0
    for conv in conversations:
        r: Rendered = render(conv)
        by_piece += r.by_piece
        ids, trained = r.ids, r.trained
        if len(ids) > block_size + 1:
            if on_long == "refuse":
                raise DataError(
                    f"{conv.where}: the conversation is {len(ids)} tokens, longer than a row of block_size "
                    f"{block_size} (+1); raise data.block_size to at least {len(ids) - 1}, shorten the record, "
                    "or set data.on_long: truncate to cut such conversations to the row (counted)."
                )
            truncated += 1
            ids, trained = ids[: block_size + 1], trained[: block_size + 1]
            if not any(trained[1:]):
                dropped += 1
                continue
        if not any(trained[1:]):
            raise DataError(
                f"{conv.where}: the rendered conversation holds no assistant token to train on (empty "
                "answers?); give the assistant messages content, or drop the record."
            )
        row = [*ids[:-1], *[pad] * (block_size + 1 - len(ids))]
        targets = [i if t else IGNORE_INDEX for i, t in zip(ids[1:], trained[1:], strict=True)]
        inputs.append(row)
        labels.append(targets + [IGNORE_INDEX] * (block_size - len(targets)))
    shape = (len(inputs), block_size)
    x = torch.tensor(inputs, dtype=torch.int64).reshape(shape)
    y = torch.tensor(labels, dtype=torch.int64).reshape(shape)
    return ChatRows(TokenRowSplit(x, y), truncated, dropped, by_piece)


# --------------------------------------------------------------------------------------------
# splits and the bundle


def split_conversations(
    conversations: Sequence[Conversation], *, val_fraction: float, test_fraction: float = TEST_FRACTION
) -> tuple[dict[str, list[Conversation]], str]:
    """Conversations into train/val/test, and how: by a hash of their messages (``"hash"``) when every
    needed split gets one, else by position (``"position"``: the last ones test, those before val)."""
    out: dict[str, list[Conversation]] = {"train": [], "val": [], "test": []}
    for conv in conversations:
        u = path_fraction(json.dumps(conv.as_dicts(), sort_keys=True, ensure_ascii=False))
        out["test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"].append(
            conv
        )
    need = ["train", "test"] + (["val"] if val_fraction > 0 else [])
    if all(out[s] for s in need):
        return out, "hash"
    n = len(conversations)
    n_test = max(1, round(n * test_fraction))
    n_val = round(n * val_fraction) if val_fraction > 0 else 0
    if val_fraction > 0:
        n_val = max(1, n_val)
    cut_val, cut_test = n - n_test - n_val, n - n_test
    if cut_val < 1:
        raise DataError(
            f"{n} conversation(s) are too few for a train, val and test split; add conversations, or lower "
            f"val_fraction (now {val_fraction})."
        )
    seq = list(conversations)
    return {"train": seq[:cut_val], "val": seq[cut_val:cut_test], "test": seq[cut_test:]}, "position"


def load_chat(
    root: str | Path,
    *,
    name: str = "chat",
    tokenizer: str | Tokenizer = "byte",
    block_size: int = DEFAULT_BLOCK_SIZE,
    val_fraction: float = 0.1,
    limit: int | None = None,
    errors: str = "strict",
    chat_template: str = "auto",
    on_long: str = "refuse",
    trust_code: bool = False,
) -> DataBundle:
    """A language-modelling bundle of conversation rows (see the module docstring).

    Args:
        root: a JSONL/CSV/TSV file, a folder of them, or ``folder/**/*.jsonl``.
        name: the bundle's name.
        tokenizer: a registered tokenizer name, ``hf:DIR``, or a :class:`Tokenizer`.
        block_size: T, the inputs of one row (a row holds T + 1 tokens of a conversation).
        val_fraction: the share of conversations held out for validation.
        limit: keep the first `limit` train rows and ``max(1, limit // 5)`` val/test rows.
        errors: "strict" (invalid UTF-8 is an error) or "replace".
        chat_template: "auto" (the tokenizer's own; the byte tokenizer's is the built-in one) or "builtin".
        on_long: "refuse" or "truncate" a conversation longer than a row.
        trust_code: let an ``hf:DIR`` tokenizer that names its own code run it (``--trust-code``).

    Raises:
        ConfigError: a bad option, or a tokenizer without a chat template under ``auto``.
        DataError: bad files or records, a long conversation refused, or too few conversations.
    """
    if block_size < 2:
        raise ConfigError(f"block_size must be >= 2 tokens (inputs and their next tokens), got {block_size}.")
    if not 0.0 <= val_fraction < 1.0 - TEST_FRACTION:
        raise ConfigError(f"val_fraction must be in [0, {1 - TEST_FRACTION}), got {val_fraction}.")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of train rows or None, got {limit}.")
    tok = get_tokenizer(tokenizer, trust_remote_code=trust_code)
    template, _ = chat_renderer(tok, chat_template)  # a missing template stops here, before any read
    _, files = find_files(root, tuple(f"**/*{suffix}" for suffix in RECORD_SUFFIXES))
    others = [p for p in files if p.suffix.lower() not in RECORD_SUFFIXES]
    if others:
        raise DataError(
            f"dataset {name!r} reads conversations from .jsonl, .csv or .tsv records; {others[0]} is not one."
        )
    conversations = [c for p in files for c in read_conversations(p, errors)]
    if not conversations:
        raise DataError(f"dataset {name!r}: {str(root)!r} holds no conversation; {_FORMAT_FIX}")
    groups, how = split_conversations(conversations, val_fraction=val_fraction)
    splits: dict[str, TokenRowSplit] = {}
    counts: dict[str, dict[str, int]] = {"truncated": {}, "dropped": {}, "by_piece": {}}
    for split_name in ("train", "val", "test"):
        rows = conversation_rows(
            groups[split_name], tok, block_size=block_size, chat_template=chat_template, on_long=on_long
        )
        splits[split_name] = rows.split
        counts["truncated"][split_name] = rows.truncated
        counts["dropped"][split_name] = rows.dropped
        counts["by_piece"][split_name] = rows.by_piece
    for split_name in ("train", "test"):
        if len(splits[split_name]) == 0:
            raise DataError(
                f"dataset {name!r}: no {split_name} conversation is left ({counts['dropped'][split_name]} dropped "
                "by data.on_long: truncate with no assistant token in the row); raise data.block_size or add "
                "conversations."
            )
    if limit is not None:
        small = max(1, limit // 5)
        splits = {
            k: s.take(torch.arange(min(len(s), limit if k == "train" else small))) for k, s in splits.items()
        }
    extra = _notes(tok, tokenizer, block_size, template, on_long, how, len(files), len(conversations), counts)
    # Recorded in checkpoint sidecars: `distil eval` on the checkpoint builds the same rows.
    options = {
        "block_size": block_size,
        "tokenizer": tokenizer if isinstance(tokenizer, str) else None,
        "errors": errors,
        "chat_template": chat_template,
        "on_long": on_long,
    }
    return token_bundle(name, splits, str(root), extra, options, eos_id=tok.eos_id)


def _notes(
    tok: Tokenizer,
    tokenizer: str | Tokenizer,
    block_size: int,
    template: str,
    on_long: str,
    how: str,
    files: int,
    conversations: int,
    counts: dict[str, dict[str, int]],
) -> dict[str, str]:
    """The bundle's ``extra``; a notice when conversations were cut, dropped or tokenized piece by piece."""
    extra = {
        "tokenizer": tok.fingerprint,
        "tokenizer_name": tokenizer if isinstance(tokenizer, str) else "",
        "vocab_size": str(tok.vocab_size),
        "block_size": str(block_size),
        "chat_template": template,
        "on_long": on_long,
        "split_by": how,
        "files": str(files),
        "conversations": str(conversations),
    }
    key = {"truncated": "truncated", "dropped": "dropped", "by_piece": "tokenized_by_piece"}
    for what, per_split in counts.items():
        if sum(per_split.values()):
            extra[key[what]] = ", ".join(f"{k}: {v}" for k, v in per_split.items())
    if "truncated" in extra:
        dropped = (
            f"; left without an assistant token and dropped: {extra['dropped']}" if "dropped" in extra else ""
        )
        warnings.warn(
            f"chat data: conversations longer than block_size {block_size} (+1) cut to the row "
            f"(data.on_long: truncate): {extra['truncated']}{dropped}.",
            UserWarning,
            stacklevel=2,
        )
    if "tokenized_by_piece" in extra:
        warnings.warn(
            f"chat data: the chat template's text tokenizes differently whole than piece by piece in some "
            f"conversations ({extra['tokenized_by_piece']}); their pieces were tokenized one by one.",
            UserWarning,
            stacklevel=2,
        )
    return extra


class ChatCorpus:
    """The `LazyDataset` of ``chat``: records read and rendered when the bundle is built."""

    def __init__(self, root: Path, **options: Any) -> None:
        self.root, self.options = root, options

    def build_bundle(self, name: str, *, val_fraction: float, seed: int, limit: int | None) -> DataBundle:
        del seed  # splits are fixed by a hash of each conversation or by position, not by a seed
        return load_chat(self.root, name=name, val_fraction=val_fraction, limit=limit, **self.options)


@DATASETS.register("chat")
def chat_reader(
    root: Path | None,
    block_size: int | None = None,
    tokenizer: str | None = None,
    errors: str | None = None,
    chat_template: str | None = None,
    on_long: str | None = None,
    trust_code: bool = False,
) -> ChatCorpus:
    """Chat / instruction data: `data.root` is a JSONL, CSV or TSV file (or a folder of them) of
    ``{"messages": [...]}`` or ``{"prompt", "completion"}`` records; one conversation per row of
    ``block_size`` tokens (default 256), the loss on the assistant's tokens only (``data.chat_template``,
    ``data.on_long``: see :mod:`distil.data.chat`)."""
    if root is None:
        raise DataError(
            'dataset \'chat\' needs data.root: a JSONL file (or a folder of them), one {"messages": [{"role": '
            '"user", "content": "..."}, {"role": "assistant", "content": "..."}]} per line.'
        )
    return ChatCorpus(
        root,
        block_size=block_size or DEFAULT_BLOCK_SIZE,
        tokenizer=tokenizer or "byte",
        errors=errors or "strict",
        chat_template=chat_template or "auto",
        on_long=on_long or "refuse",
        trust_code=trust_code,
    )


__all__ = [
    "CHAT_TEMPLATES",
    "ON_LONG",
    "ChatRows",
    "Conversation",
    "Message",
    "Rendered",
    "chat_renderer",
    "conversation_rows",
    "load_chat",
    "read_conversations",
    "record_conversation",
    "render_builtin",
    "render_with_template",
    "split_conversations",
    "template_pieces",
]
