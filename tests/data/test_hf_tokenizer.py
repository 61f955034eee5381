"""A local Hugging Face tokenizer through distil's Tokenizer protocol: ids, fingerprint, refusals."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from distil.data.tokenize import Tokenizer, get_tokenizer
from distil.errors import ConfigError

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"]


def save_tiny_tokenizer(directory: Path, corpus: list[str] = CORPUS) -> Path:
    """A word-level tokenizer trained on `corpus` and saved as transformers saves one (no download)."""
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    model.decoder = tokenizers.decoders.WordPiece(prefix="##")
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["<unk>", "</s>"])
    model.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", eos_token="</s>")
    fast.save_pretrained(directory)
    return directory


def test_round_trip_and_protocol(tmp_path: Path) -> None:
    tok = get_tokenizer(f"hf:{save_tiny_tokenizer(tmp_path / 'tok')}")
    assert isinstance(tok, Tokenizer)
    ids = tok.encode("the cat sat on the log")
    assert len(ids) == 6 and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == "the cat sat on the log"
    assert tok.decode([*ids, tok.eos_id]) == "the cat sat on the log"  # special tokens skipped
    assert tok.fingerprint.startswith("hf-") and tok.vocab_size == len(tok.hf)


def test_fingerprint_follows_the_files_not_the_directory_name(tmp_path: Path) -> None:
    a = get_tokenizer(f"hf:{save_tiny_tokenizer(tmp_path / 'a')}")
    b = get_tokenizer(f"hf:{save_tiny_tokenizer(tmp_path / 'b')}")
    c = get_tokenizer(f"hf:{save_tiny_tokenizer(tmp_path / 'c', [*CORPUS, 'a bird flew'])}")
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory with tokenizer files"):
        get_tokenizer(f"hf:{tmp_path / 'missing'}")
    directory = save_tiny_tokenizer(tmp_path / "tok")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.Evil", None]}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"auto_map.*--trust-code"):
        get_tokenizer(f"hf:{directory}")


def bert_vocab(words: Iterable[str]) -> list[str]:
    """A WordPiece vocabulary as a BERT vocab.txt lists it: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4,
    then `words` (sorted) and ``##s``."""
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words)), "##s"]


BERT_VOCAB = bert_vocab(w for s in CORPUS for w in s.split())


def save_bert_tokenizer(directory: Path, vocab: list[str] = BERT_VOCAB) -> Path:
    """A BERT WordPiece tokenizer of `vocab` saved as ``BertTokenizerFast.save_pretrained`` saves one (no
    download): [CLS], [SEP], [PAD], [UNK], [MASK], and no eos_token."""
    fast = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    fast.save_pretrained(directory)
    return directory


def test_a_bert_tokenizer_without_eos_loads_and_frames_a_sequence_with_cls_and_sep(tmp_path: Path) -> None:
    tok = get_tokenizer(f"hf:{save_bert_tokenizer(tmp_path / 'bert')}")
    assert tok.hf.eos_token_id is None  # type: ignore[attr-defined]
    ids = {w: i for i, w in enumerate(BERT_VOCAB)}
    assert tok.encode("The cats sat") == [ids["the"], ids["cat"], ids["##s"], ids["sat"]]
    assert tok.framing() == ([ids["[CLS]"]], [ids["[SEP]"]])  # type: ignore[attr-defined]
    assert tok.pad_id == ids["[PAD]"] == 0  # type: ignore[attr-defined]
    # Documents are joined with EOS only in language-modelling data: there, it is required, and said so.
    with pytest.raises(
        ConfigError, match=r"has no eos_token, which language-modelling data needs.*save it again"
    ):
        tok.eos_id  # noqa: B018


def test_a_tokenizer_that_adds_no_special_tokens_starts_with_its_bos_if_it_has_one(tmp_path: Path) -> None:
    directory = save_tiny_tokenizer(tmp_path / "tok")
    tok = get_tokenizer(f"hf:{directory}")
    assert tok.framing() == ([], [])  # type: ignore[attr-defined]  # no bos, no cls: nothing around the text
    config = json.loads((directory / "tokenizer_config.json").read_text())
    (directory / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "</s>"}))
    tok = get_tokenizer(f"hf:{directory}")  # GPT-2 style: a BOS that add_special_tokens does not add
    assert tok.framing() == ([tok.eos_id], [])  # type: ignore[attr-defined]
