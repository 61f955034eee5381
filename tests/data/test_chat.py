"""Chat data (issue 23, item 1): one conversation per row, rendered with a template, loss on the assistant's
tokens only; long conversations refused or truncated with a count; prompt tokens change no loss term."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distil.config import KDConfig
from distil.data import load_dataset
from distil.data.chat import Conversation, Message, conversation_rows, load_chat, render_builtin
from distil.data.text import load_text
from distil.data.tokenize import ByteTokenizer
from distil.errors import ConfigError, DataError
from distil.losses import build_loss

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

EOS = ByteTokenizer.EOS
PAD = ByteTokenizer.PAD
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = "system user assistant be brief what is two plus two four and three five six thanks ok"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def save_chat_tokenizer(directory: Path, template: str | None = CHATML) -> Path:
    """A word-level tokenizer with ChatML's special tokens and `template` as its chat template (no download)."""
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    specials = ["<unk>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    model.train_from_iterator([WORDS], tokenizers.trainers.WordLevelTrainer(special_tokens=specials))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="<unk>", eos_token="</s>", pad_token="<pad>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if template is not None:
        fast.chat_template = template
    fast.save_pretrained(directory)
    return directory


def rows_of(root: Path, **options) -> tuple:
    """Every row of the bundle (train, val, test) as (inputs, labels) lists, with the bundle."""
    data = load_chat(root, val_fraction=0.0, **options)
    inputs = torch.cat([s.inputs for s in (data.train, data.val, data.test)])
    labels = torch.cat([s.targets for s in (data.train, data.val, data.test)])
    return inputs, labels, data


def trained_ids(inputs_row: torch.Tensor, labels_row: torch.Tensor) -> list[int]:
    return labels_row[labels_row != -100].tolist()


# --------------------------------------------------------------------------------------------
# the byte tokenizer and the built-in template


def test_builtin_template_ids_and_labels_are_exact(tmp_path: Path) -> None:
    root = write_jsonl(tmp_path / "c.jsonl", [chat(("system", "s"), ("user", "u"), ("assistant", "a"))] * 2)
    inputs, labels, data = rows_of(root, block_size=48)
    text = b"<|system|>\ns\n<|user|>\nu\n<|assistant|>\na"
    ids = [*text, EOS]
    assert inputs[0].tolist() == ids[:-1] + [PAD] * (48 - len(ids) + 1)
    # Only the next tokens the assistant wrote are targets: its "a" and the EOS, not its header.
    expected = [-100] * 48
    expected[len(text) - 2], expected[len(text) - 1] = ord("a"), EOS  # labels are the next tokens
    assert labels[0].tolist() == expected
    assert data.extra["chat_template"] == "builtin" and data.is_tokens and data.num_classes == 259


def test_two_assistant_turns_are_both_trained_and_the_user_between_is_not(tmp_path: Path) -> None:
    record = chat(("user", "hi"), ("assistant", "yo"), ("user", "and?"), ("assistant", "ok"))
    inputs, labels, _ = rows_of(write_jsonl(tmp_path / "c.jsonl", [record] * 2), block_size=64)
    assert ByteTokenizer().decode(trained_ids(inputs[0], labels[0])) == "yook"
    assert trained_ids(inputs[0], labels[0]).count(EOS) == 2
    assert bytes(b for b in inputs[0].tolist() if b < 256).decode() == (
        "<|user|>\nhi\n<|assistant|>\nyo<|user|>\nand?\n<|assistant|>\nok"
    )


def test_prompt_completion_strings_are_a_user_turn_and_an_answer(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a" / "c.jsonl", [{"prompt": "2+2?", "completion": "4"}] * 2)
    b = write_jsonl(tmp_path / "b" / "c.jsonl", [chat(("user", "2+2?"), ("assistant", "4"))] * 2)
    ia, la, _ = rows_of(a, block_size=32)
    ib, lb, _ = rows_of(b, block_size=32)
    assert torch.equal(ia, ib) and torch.equal(la, lb)


def test_each_conversation_is_one_row_never_packed_with_another(tmp_path: Path) -> None:
    records = [chat(("user", f"question {i}"), ("assistant", "x" * (i % 5 + 1))) for i in range(40)]
    data = load_chat(write_jsonl(tmp_path / "c.jsonl", records), block_size=64)
    splits = (data.train, data.val, data.test)
    assert sum(len(s) for s in splits) == 40 and data.extra["conversations"] == "40"
    for split in splits:
        for row in split.inputs.tolist():
            text = bytes(b for b in row if b < 256).decode()
            assert text.count("<|user|>") == 1  # exactly one conversation per row
            end = row.index(PAD)
            assert all(t == PAD for t in row[end:])  # then padding alone
        assert (split.targets[split.inputs == PAD] == -100).all()


def test_a_long_conversation_is_refused_naming_the_line_and_the_option(tmp_path: Path) -> None:
    records = [chat(("user", "q"), ("assistant", "a"))] * 3 + [chat(("user", "q" * 80), ("assistant", "a"))]
    root = write_jsonl(tmp_path / "c.jsonl", records)
    with pytest.raises(
        DataError, match=r"c\.jsonl:4: the conversation is \d+ tokens.*data\.on_long: truncate"
    ):
        load_chat(root, block_size=40)


def test_truncate_cuts_and_counts_and_drops_rows_left_without_an_answer() -> None:
    convs = [
        Conversation((Message("user", "q"), Message("assistant", "a" * 30)), f"c.jsonl:{i}") for i in range(3)
    ]
    # The answer falls outside the row: nothing left to train on, so the row is dropped (and counted).
    convs.append(Conversation((Message("user", "q" * 80), Message("assistant", "a")), "c.jsonl:4"))
    rows = conversation_rows(convs, ByteTokenizer(), block_size=40, on_long="truncate")
    assert (rows.truncated, rows.dropped, len(rows.split)) == (4, 1, 3)
    kept = rows.split.targets[0]
    assert (
        kept[-1] == ord("a") and int((kept != -100).sum()) == 41 - 25
    )  # 25 header tokens, then the answer cut
    assert rows.split.inputs[0].tolist() == [*b"<|user|>\nq\n<|assistant|>\n", *b"a" * 15]


def test_truncated_conversations_are_counted_in_the_bundle_and_said(tmp_path: Path) -> None:
    records = [chat(("user", f"q{i}"), ("assistant", "a" * (30 + i))) for i in range(20)]
    root = write_jsonl(tmp_path / "c.jsonl", records)
    with pytest.warns(UserWarning, match=r"cut to the row \(data\.on_long: truncate\)"):
        data = load_dataset("chat", root, options={"block_size": 44, "on_long": "truncate"})
    counted = dict(p.split(": ") for p in data.extra["truncated"].split(", "))
    assert sum(int(v) for v in counted.values()) == 20 and "dropped" not in data.extra
    assert data.input_shape == (44,) and data.options["on_long"] == "truncate"


def test_records_that_are_not_conversations_are_named(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "a" / "c.jsonl", [chat(("user", "q"))])
    with pytest.raises(DataError, match=r"c\.jsonl:1: no message has role 'assistant'"):
        load_chat(bad)
    bad = write_jsonl(tmp_path / "b" / "c.jsonl", [{"messages": [{"role": "user"}]}])
    with pytest.raises(DataError, match=r"messages\[0\].*string \"content\""):
        load_chat(bad)
    bad = write_jsonl(tmp_path / "c" / "c.jsonl", [{"text": "hello"}])
    with pytest.raises(DataError, match=r"has keys \['text'\].*\"messages\""):
        load_chat(bad)


def test_the_text_reader_refuses_conversations_instead_of_packing_them(tmp_path: Path) -> None:
    root = write_jsonl(tmp_path / "c.jsonl", [chat(("user", "q"), ("assistant", "a"))] * 3)
    with pytest.raises(DataError, match=r"data\.name: chat"):
        load_text(root, block_size=8, cache_dir=tmp_path / "cache")


def test_chat_options_are_refused_by_other_readers() -> None:
    with pytest.raises(ConfigError, match="chat_template and on_long: chat"):
        load_dataset("digits", options={"on_long": "truncate"})


# --------------------------------------------------------------------------------------------
# a Hugging Face tokenizer and its chat template


def test_the_tokenizers_template_marks_what_each_answer_added(tmp_path: Path) -> None:
    directory = save_chat_tokenizer(tmp_path / "tok")
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    record = chat(("system", "be brief"), ("user", "what is two plus two"), ("assistant", "four"),
                  ("user", "and three"), ("assistant", "five thanks"))  # fmt: skip
    root = write_jsonl(tmp_path / "c.jsonl", [record] * 2)
    inputs, labels, data = rows_of(root, block_size=40, tokenizer=f"hf:{directory}")
    whole = hf.apply_chat_template(record["messages"], tokenize=False)
    ids = hf(whole, add_special_tokens=False)["input_ids"]
    assert inputs[0, : len(ids) - 1].tolist() == ids[:-1]
    assert (inputs[0, len(ids) - 1 :] == hf.pad_token_id).all()
    # Trained: each answer and its end-of-turn marker; never a header, the system or a user turn.
    end = hf.convert_tokens_to_ids("<|im_end|>")
    assert trained_ids(inputs[0], labels[0]) == [
        *hf("four", add_special_tokens=False)["input_ids"], end,
        *hf("five thanks", add_special_tokens=False)["input_ids"], end,
    ]  # fmt: skip
    assert data.extra["chat_template"] == "tokenizer" and "tokenized_by_piece" not in data.extra


def test_a_tokenizer_without_a_template_is_refused_with_the_fixes(tmp_path: Path) -> None:
    directory = save_chat_tokenizer(tmp_path / "tok", template=None)
    root = write_jsonl(tmp_path / "c.jsonl", [chat(("user", "two"), ("assistant", "four"))] * 2)
    with pytest.raises(
        ConfigError, match=r"no chat template.*tokenizer\.chat_template.*chat_template: builtin"
    ):
        load_chat(root, tokenizer=f"hf:{directory}", val_fraction=0.0)
    # The built-in template works with any tokenizer: headers, content and its EOS.
    inputs, labels, _ = rows_of(root, block_size=16, tokenizer=f"hf:{directory}", chat_template="builtin")
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    assert trained_ids(inputs[0], labels[0]) == [hf.convert_tokens_to_ids("four"), hf.eos_token_id]


def test_a_template_that_rewrites_earlier_turns_is_refused(tmp_path: Path) -> None:
    # Renders the last message differently from the others: not found by rendering turn by turn.
    template = "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m.content }} {% endfor %}"
    directory = save_chat_tokenizer(tmp_path / "tok", template=template)
    root = write_jsonl(tmp_path / "c.jsonl", [chat(("user", "two"), ("assistant", "four"))] * 2)
    with pytest.raises(DataError, match=r"c\.jsonl:1: .*turn by turn; use data\.chat_template: builtin"):
        load_chat(root, tokenizer=f"hf:{directory}", val_fraction=0.0)


def test_pieces_that_tokenize_differently_whole_are_tokenized_one_by_one(tmp_path: Path) -> None:
    # No space between the generation prompt and the answer: whole, "ANSWERfour" is one (unknown) word.
    template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}{{ m.content }} {% else %}{{ m.content }} "
        "{% endif %}{% endfor %}{% if add_generation_prompt %}ANSWER{% endif %}"
    )
    directory = save_chat_tokenizer(tmp_path / "tok", template=template)
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    root = write_jsonl(tmp_path / "c.jsonl", [chat(("user", "two"), ("assistant", "four"))] * 2)
    # That template is not prefix-stable either way: turn by turn it is refused, never silently mis-masked.
    with pytest.raises(DataError, match="turn by turn"):
        load_chat(root, tokenizer=f"hf:{directory}", val_fraction=0.0)
    # A prefix-stable one whose header glues to the answer: the pieces are tokenized one by one, counted.
    glued = (
        "{% for m in messages %}{% if m.role == 'assistant' %}ok{{ m.content }} {% else %}{{ m.content }} "
        "{% endif %}{% endfor %}{% if add_generation_prompt %}ok{% endif %}"
    )
    directory = save_chat_tokenizer(tmp_path / "tok2", template=glued)
    with pytest.warns(UserWarning, match="piece by piece"):
        inputs, labels, data = rows_of(root, block_size=8, tokenizer=f"hf:{directory}")
    assert "tokenized_by_piece" in data.extra
    ok, four = hf.convert_tokens_to_ids("ok"), hf.convert_tokens_to_ids("four")
    assert inputs[0, :2].tolist() == [hf.convert_tokens_to_ids("two"), ok]
    assert trained_ids(inputs[0], labels[0]) == [four]  # the header "ok" is prompt


# --------------------------------------------------------------------------------------------
# the loss: prompt tokens count in no term

TERMS = ("kd", "rkl", "js", "tvd", "logit_mse", "dkd")


def test_changing_a_prompt_tokens_target_or_teacher_changes_no_loss_term(tmp_path: Path) -> None:
    records = [chat(("system", "sys"), ("user", "question"), ("assistant", "ans")),
               chat(("system", "sys"), ("user", "QUESTION"), ("assistant", "ans"))]  # fmt: skip
    inputs, labels, _ = rows_of(write_jsonl(tmp_path / "c.jsonl", records), block_size=64)
    # Another user message of the same length changes the prompt's tokens, and no label.
    assert not torch.equal(inputs[0], inputs[1]) and torch.equal(labels[0], labels[1])
    v = ByteTokenizer().vocab_size
    kd = KDConfig(terms={"ce": 1.0, **dict.fromkeys(TERMS, 1.0)}, temperature=2.0)
    net = nn.Linear(1, 1)
    loss = build_loss(kd, student=net, teacher=net, sample_x=torch.zeros(2, 1), num_classes=v)
    torch.manual_seed(0)
    s, t = torch.randn(2, 64, v), torch.randn(2, 64, v)
    batch = {"inputs": inputs, "labels": labels, "index": torch.arange(2)}
    before = loss(s, t, batch)
    prompt = labels == -100
    s2, t2 = s.clone(), t.clone()
    s2[prompt] = 10 * torch.randn(int(prompt.sum()), v)
    t2[prompt] = 10 * torch.randn(int(prompt.sum()), v)
    # A prompt token's target set to a real id instead of -100 would count: the data never does that.
    after = loss(s2, t2, batch)
    for name in ("loss", "ce", *TERMS):
        torch.testing.assert_close(after[name], before[name], msg=f"term {name} counts prompt tokens")
    # The mask is what matters: every term does change when an assistant position's teacher changes.
    t3 = t.clone()
    t3[~prompt] = 10 * torch.randn(int((~prompt).sum()), v)
    changed = loss(s, t3, batch)
    assert all(not torch.allclose(changed[name], before[name]) for name in TERMS)


def test_render_builtin_on_its_own() -> None:
    conv = Conversation((Message("user", "q"), Message("assistant", "a")), "here")
    r = render_builtin(conv, ByteTokenizer())
    assert r.ids == [*b"<|user|>\nq\n<|assistant|>\na", EOS]
    assert [i for i, t in zip(r.ids, r.trained, strict=True) if t] == [ord("a"), EOS]
