"""Text corpora: the byte tokenizer, packing and label shift, prompt masking, the token cache, the
python-stdlib split, and every bad input."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distil.data import DATASETS, load_dataset
from distil.data import text as text_mod
from distil.data.batch import IGNORE_INDEX
from distil.data.bundle import SampleSplit
from distil.data.text import (
    LANGUAGE_MODELING,
    TokenBlockSplit,
    build_stream,
    load_text,
    split_files,
    stdlib_files,
    stdlib_root,
)
from distil.data.tokenize import ByteTokenizer, check_same_tokenizer, get_tokenizer
from distil.data.validate import validate_bundle
from distil.errors import ConfigError, DataError

TOK = ByteTokenizer()
EOS = TOK.eos_id


# --------------------------------------------------------------------------------------------
# tokenizer


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_byte_tokenizer_round_trips_any_unicode(s: str) -> None:
    ids = TOK.encode(s)
    assert all(0 <= i < 256 for i in ids) and len(ids) == len(s.encode("utf-8"))
    assert TOK.decode(ids) == s
    assert TOK.decode([TOK.bos_id, *ids, TOK.eos_id, TOK.pad_id]) == s  # special ids are dropped


def test_byte_tokenizer_basics() -> None:
    assert TOK.vocab_size == 259 and len({TOK.bos_id, TOK.eos_id, TOK.pad_id}) == 3
    assert TOK.fingerprint == "byte-v1" == get_tokenizer("byte").fingerprint
    assert TOK.decode([0xE2, 0x82]) == "\ufffd"  # a cut character is replaced, not an error
    with pytest.raises(ValueError, match="outside"):
        TOK.decode([259])
    with pytest.raises(ConfigError, match="Did you mean 'byte'"):
        get_tokenizer("bite")


def test_teacher_and_student_tokenizers_must_match() -> None:
    class Other(ByteTokenizer):
        @property
        def fingerprint(self) -> str:
            return "other-v1"

    check_same_tokenizer(TOK, ByteTokenizer())
    with pytest.raises(ConfigError, match=r"teacher's tokenizer \(byte-v1.*student's \(other-v1"):
        check_same_tokenizer(TOK, Other())


# --------------------------------------------------------------------------------------------
# packing


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_blocks_are_the_packed_stream_with_labels_shifted_by_one(tmp_path: Path) -> None:
    f = _write(tmp_path / "a.txt", "hello world, hello text")
    g = _write(tmp_path / "b.txt", "héllo")
    t = 4
    b = load_text(tmp_path, block_size=t, split_by="blocks", val_fraction=0.0, cache_dir=tmp_path / "c")
    stream = [*TOK.encode(f.read_text()), EOS, *TOK.encode(g.read_text()), EOS]  # sorted files, EOS-joined
    n = (len(stream) - 1) // t
    assert len(b.train) + len(b.val) + len(b.test) == n and len(b.test) == 1
    assert b.task == LANGUAGE_MODELING and b.input_shape == (t,) and b.extra["vocab_size"] == "259"
    whole = [b.train[i] for i in range(len(b.train))] + [b.test[0]]
    for i, sample in enumerate(whole):
        assert sample["inputs"].dtype == torch.int64 and sample["inputs"].shape == (t,)
        assert sample["inputs"].tolist() == stream[i * t : i * t + t]
        assert sample["labels"].tolist() == stream[i * t + 1 : i * t + t + 1]
    assert isinstance(b.train, SampleSplit)
    assert torch.equal(b.train.labels, torch.zeros(len(b.train), dtype=torch.int64))  # no classes
    batch = next(b.train.batches(3))
    assert batch["inputs"].shape == (3, t) and batch["labels"].shape == (3, t)
    assert torch.equal(batch["inputs"][1], b.train[1]["inputs"]) and batch["index"].tolist() == [0, 1, 2]
    assert torch.equal(b.train.head(2), batch["inputs"][:2])
    assert b.train[-1]["inputs"].tolist() == whole[len(b.train) - 1]["inputs"].tolist()
    sub = b.train.take(torch.tensor([2, 0]))
    assert torch.equal(sub[0]["inputs"], b.train[2]["inputs"])
    restored = pickle.loads(pickle.dumps(sub))  # workers reopen the file by path
    assert torch.equal(restored[1]["labels"], b.train[0]["labels"])


def test_prompt_tokens_have_no_labels(tmp_path: Path) -> None:
    lines = [
        {"prompt": "Q: 2+2?", "completion": " 4"},
        {"text": "plain"},
        {"prompt": "ab", "completion": "cd"},
    ]
    f = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    stream = build_stream([f], TOK, cache_dir=tmp_path / "c", block_size=16)
    assert stream.has_mask
    tokens = np.load(stream.tokens_path)
    expected = [*TOK.encode("Q: 2+2? 4"), EOS, *TOK.encode("plain"), EOS, *TOK.encode("abcd"), EOS]
    assert tokens.tolist() == expected
    mask = [False] * 7 + [True] * 3 + [True] * 6 + [False] * 2 + [True] * 3
    t = len(expected) - 1
    split = TokenBlockSplit(stream.tokens_path, stream.mask_path, t, torch.arange(1), TOK.vocab_size)
    labels = split[0]["labels"].tolist()
    assert labels == [tok if m else IGNORE_INDEX for tok, m in zip(expected[1:], mask[1:], strict=True)]
    assert split[0]["inputs"].tolist() == expected[:-1]


def test_prompt_and_completion_from_csv_and_tsv_are_masked_as_from_jsonl(tmp_path: Path) -> None:
    records = [("Q: 2+2, please?", " 4"), ('say "hi"', "hi\nthere"), ("ab", "cd")]
    jsonl = _write(
        tmp_path / "j" / "d.jsonl",
        "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in records),
    )
    quoted = "".join('"{}","{}"\r\n'.format(p.replace('"', '""'), c) for p, c in records)
    csv = _write(tmp_path / "c" / "d.csv", ("\ufeffprompt,completion\r\n" + quoted).encode())
    tsv = _write(tmp_path / "t" / "d.tsv", "prompt\tcompletion\n" + quoted.replace('","', '"\t"'))
    streams = [build_stream([f], TOK, cache_dir=tmp_path / "cache", block_size=32) for f in (jsonl, csv, tsv)]
    tokens = [np.load(s.tokens_path).tolist() for s in streams]
    masks = [np.load(s.mask_path).tolist() for s in streams if s.mask_path is not None]
    assert len(masks) == 3 and tokens[0] == tokens[1] == tokens[2] and masks[0] == masks[1] == masks[2]
    assert sum(not m for m in masks[0]) == sum(len(TOK.encode(p)) for p, _ in records)  # the prompts


def test_a_bom_and_crlf_in_a_text_corpus_give_the_tokens_of_the_plain_lf_file(tmp_path: Path) -> None:
    text = "first line\nsecond line\n\nthird, after a blank line\n" * 3
    plain = _write(tmp_path / "lf" / "a.txt", text)
    windows = _write(tmp_path / "crlf" / "a.txt", b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    old_mac = _write(tmp_path / "cr" / "a.txt", text.replace("\n", "\r"))
    cache = tmp_path / "cache"
    streams = [
        np.load(build_stream([f], TOK, cache_dir=cache).tokens_path).tolist()
        for f in (plain, windows, old_mac)
    ]
    assert streams[0] == streams[1] == streams[2] == [*TOK.encode(text), EOS]
    # newlines="keep" keeps them as tokens (and is a cache of its own)
    kept = build_stream([windows], TOK, cache_dir=cache, newlines="keep")
    assert np.load(kept.tokens_path).tolist() == [*windows.read_bytes(), EOS]
    b = load_dataset("text", windows, options={"block_size": 8, "newlines": "keep", "split_by": "blocks"})
    assert b.options["newlines"] == "keep"  # recorded: `distil eval` on a checkpoint reads the same blocks
    with pytest.raises(ConfigError, match="newlines must be 'normalize' or 'keep'"):
        load_text(windows, newlines="strip")


def test_a_prompt_and_completion_longer_than_a_block_is_refused(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "d.jsonl",
        json.dumps({"text": "x" * 50}) + "\n" + json.dumps({"prompt": "p" * 20, "completion": "c"}),
    )
    with pytest.raises(DataError, match=r"d\.jsonl:2: prompt \+ completion is 22 tokens.*Raise block_size"):
        build_stream([f], TOK, cache_dir=tmp_path / "c", block_size=8)


# --------------------------------------------------------------------------------------------
# the cache


def test_the_cache_is_hit_then_rebuilt_when_a_file_changes(tmp_path: Path, monkeypatch) -> None:
    f = _write(tmp_path / "corpus" / "a.txt", "some text " * 20)
    cache = tmp_path / "cache"
    first = build_stream([f], TOK, cache_dir=cache)
    assert first.built and first.length == 201
    calls = []
    monkeypatch.setattr(text_mod, "read_documents", lambda *a, **k: calls.append(1) or ([], 0))
    second = build_stream([f], TOK, cache_dir=cache)
    assert not second.built and second.directory == first.directory and not calls  # nothing read
    monkeypatch.undo()
    _write(f, "other text " * 20)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    third = build_stream([f], TOK, cache_dir=cache)
    assert third.built and third.directory != first.directory and third.length == 221
    assert TOK.decode(np.load(third.tokens_path)[:10].tolist()) == "other text"


def test_the_cache_goes_under_distil_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "env"))
    f = _write(tmp_path / "a.txt", "abc")
    assert build_stream([f], TOK).directory.parent == tmp_path / "env" / "text"


def test_a_crash_mid_build_leaves_no_half_cache(tmp_path: Path, monkeypatch) -> None:
    f = _write(tmp_path / "a.txt", "abc " * 10)
    cache = tmp_path / "cache"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(text_mod, "atomic_write_json", crash)  # after the arrays, before the meta
    with pytest.raises(KeyboardInterrupt):
        build_stream([f], TOK, cache_dir=cache)
    assert list(cache.iterdir()) == []  # neither a final folder nor a partial one
    monkeypatch.undo()
    assert build_stream([f], TOK, cache_dir=cache).built


# --------------------------------------------------------------------------------------------
# splits and the registered datasets


def _tree(root: Path, n: int) -> list[Path]:
    return [
        _write(root / f"pkg{i % 7}" / f"mod{i}.py", f"# module {i}\n" + "x = 1\n" * (i + 5)) for i in range(n)
    ]


def test_files_split_holds_out_whole_files_deterministically(tmp_path: Path) -> None:
    files = _tree(tmp_path / "lib", 200)
    a = split_files(tmp_path / "lib", files, val_fraction=0.1)
    b = split_files(tmp_path / "lib", list(reversed(files)), val_fraction=0.1)
    assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}
    assert sum(map(len, a.values())) == 200 and not set(a["test"]) & set(a["train"])
    assert 2 <= len(a["test"]) <= 25 and 8 <= len(a["val"]) <= 40  # about 5% and 10%
    # Adding files moves no existing file between splits.
    more = split_files(tmp_path / "lib", files + _tree(tmp_path / "lib" / "extra", 30), val_fraction=0.1)
    assert set(a["test"]) <= set(more["test"]) and set(a["train"]) <= set(more["train"])


def test_python_stdlib_holds_out_whole_modules(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path / "cache"))
    lib = tmp_path / "lib"
    _tree(lib, 120)
    _write(lib / "test" / "test_x.py", "skipped")
    _write(lib / "site-packages" / "pkg.py", "skipped")
    assert all("test" not in p.parts and "site-packages" not in p.parts for p in stdlib_files(lib))
    b = load_dataset("python-stdlib", lib, val_fraction=0.1)
    assert b.extra["split_by"] == "files" and b.extra["files"] == "120" and b.task == LANGUAGE_MODELING
    validate_bundle(b)  # class checks are skipped for language modelling
    empty = load_dataset("python-stdlib", lib, val_fraction=0.0)
    assert len(empty.val) == 0 and empty.val.head(4).shape == (0, 256) and list(empty.val.batches(2)) == []
    groups = split_files(lib, stdlib_files(lib), val_fraction=0.1)
    test_text = TOK.decode(torch.cat([b.test[i]["inputs"] for i in range(len(b.test))]).tolist())
    for path in groups["test"][:-1]:  # the last file's tail may be cut from the last block
        assert path.read_text() in test_text
    again = load_dataset("python-stdlib", lib, val_fraction=0.1)
    assert torch.equal(again.test.head(len(again.test)), b.test.head(len(b.test)))
    small = load_dataset("python-stdlib", lib, val_fraction=0.1, limit=5)
    assert (len(small.train), len(small.val), len(small.test)) == (5, 1, 1)


def test_the_real_standard_library_is_found() -> None:
    files = stdlib_files()
    assert len(files) > 100 and all(p.suffix == ".py" for p in files)
    assert stdlib_root() / "json" / "__init__.py" in files
    assert not any("test" in p.relative_to(stdlib_root()).parts[:-1] for p in files)


def test_text_dataset_is_registered_and_reads_a_glob(tmp_path: Path) -> None:
    assert {"text", "python-stdlib"} <= set(DATASETS.names())
    _write(tmp_path / "docs" / "a.rst", "alpha " * 500)
    _write(tmp_path / "docs" / "b.txt", "beta " * 500)
    b = load_dataset("text", f"{tmp_path}/docs/**/*.rst", val_fraction=0.0)
    assert b.extra["files"] == "1" and b.extra["split_by"] == "blocks"
    assert "beta" not in TOK.decode(b.train.head(len(b.train)).flatten().tolist())
    with pytest.raises(DataError, match=r"needs data\.root"):
        load_dataset("text")


def test_empty_files_are_skipped_and_counted(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "words " * 100)
    _write(tmp_path / "empty.txt", "")
    _write(tmp_path / "empty.jsonl", "\n\n")
    b = load_text(tmp_path, block_size=8, split_by="blocks", cache_dir=tmp_path / "c")
    assert b.extra["skipped_empty_files"] == "2"


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\nnot json\n', r"bad\.jsonl:2 is not valid JSON"),
        ('{"text": "ok"}\n["a list"]\n', r"bad\.jsonl:2 holds a JSON list"),
        ('{"body": "no text"}\n', r"bad\.jsonl:1 has keys \['body'\].*\"text\""),
        ('{"prompt": "only a prompt"}\n', r"bad\.jsonl:1 has keys \['prompt'\]"),
        ('{"text": 3}\n', r"bad\.jsonl:1 has keys \['text'\]"),
    ],
)
def test_bad_jsonl_lines_name_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    _write(tmp_path / "bad.jsonl", content)
    with pytest.raises(DataError, match=message):
        load_text(tmp_path / "bad.jsonl", block_size=2, cache_dir=tmp_path / "c")


def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path: Path) -> None:
    f = _write(tmp_path / "latin1.txt", b"caf" + b"\xe9 au lait" * 20)
    with pytest.raises(DataError, match=r"latin1\.txt is not valid UTF-8: byte 3 \(0xe9\).*errors='replace'"):
        load_text(f, block_size=4, cache_dir=tmp_path / "c")
    b = load_text(f, block_size=4, errors="replace", val_fraction=0.0, cache_dir=tmp_path / "c")
    assert "\ufffd" in TOK.decode(b.train.head(2).flatten().tolist())


def test_empty_and_short_corpora_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "empty" / "a.txt", "")
    with pytest.raises(DataError, match="holds no text"):
        load_text(tmp_path / "empty", cache_dir=tmp_path / "c")
    f = _write(tmp_path / "short.txt", "tiny")
    with pytest.raises(DataError, match=r"holds 5 token\(s\), fewer than one block of 256.*lower block_size"):
        load_text(f, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="too few for train, val and test"):
        load_text(f, block_size=3, cache_dir=tmp_path / "c")  # 1 block for 3 splits
    with pytest.raises(DataError, match="no such file or folder"):
        load_text(tmp_path / "missing")
    with pytest.raises(DataError, match=r"no file matches \['\*\*/\*\.md'\]"):
        load_text(f"{tmp_path}/**/*.md")


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    f = _write(tmp_path / "a.txt", "abc " * 50)
    with pytest.raises(ConfigError, match="block_size must be >= 2"):
        load_text(f, block_size=1)
    with pytest.raises(ConfigError, match="errors must be"):
        load_text(f, errors="ignore")
    with pytest.raises(ConfigError, match="split_by must be"):
        load_text(f, split_by="random")
    with pytest.raises(DataError, match="every split needs a file"):
        load_text(f, split_by="files", cache_dir=tmp_path / "c")


def test_blocks_batch_through_the_dataset_loader(tmp_path: Path) -> None:
    from distil.data import DatasetLoader

    _write(tmp_path / "a.txt", "the quick brown fox " * 30)
    b = load_text(
        tmp_path / "a.txt", block_size=8, split_by="blocks", val_fraction=0.0, cache_dir=tmp_path / "c"
    )
    batches = list(DatasetLoader(b.train, 4, shuffle=True, seed=3))
    assert all(x["inputs"].shape[1:] == (8,) and x["labels"].shape == x["inputs"].shape for x in batches)
    seen = torch.cat([x["index"] for x in batches]).sort().values
    assert torch.equal(seen, torch.arange(len(b.train)))
    first = batches[0]
    assert torch.equal(first["inputs"][0], b.train[int(first["index"][0])]["inputs"])
