"""The fused LM head + loss (distil.losses.fused) against the naive path: materialised logits and the
pure functions of distil.losses.functional; the wiring through the composed loss and the training loop."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from distil.losses.chunked import RowOptions
from distil.losses.functional import (
    cross_entropy,
    js_divergence,
    kd_kl,
    logit_mse,
    reverse_kl,
    total_variation,
)
from distil.losses.fused import FusedPart, fused_loss
from distil.models.hf import HeadOutput

B, T, H, HT, V = 2, 5, 8, 12, 37
TEMP = 2.0


def _naive(
    name: str, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The reference: the pure functions on whole (B, T, V) logits (mask and-ed with labels != -100)."""
    m = mask & (labels != -100)
    if name == "kd":
        return kd_kl(s, t, TEMP, mask=m)
    if name == "rkl":
        return reverse_kl(s, t, TEMP, mask=m)
    if name == "js":
        return js_divergence(s, t, TEMP, mask=m, beta=0.3)
    if name == "tvd":
        return total_variation(s, t, TEMP, mask=m)
    if name == "mse":
        return logit_mse(s, t, mask=m)
    return cross_entropy(s, labels, 0.1, mask=m)


PARTS = {
    "kd": FusedPart("kl", RowOptions(TEMP), 1.0),
    "rkl": FusedPart("rkl", RowOptions(TEMP), 1.0),
    "js": FusedPart("jsd", RowOptions(TEMP, beta=0.3), 1.0),
    "tvd": FusedPart("tvd", RowOptions(TEMP), 1.0),
    "mse": FusedPart("mse", RowOptions(1.0), 1.0),
    "ce": FusedPart("ce", RowOptions(smoothing=0.1), 1.0),
}


def _setup(dtype: torch.dtype = torch.float32, bias: bool = True, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g).to(dtype).requires_grad_(True)
    weight = (torch.randn(V, H, generator=g) * 0.5).to(dtype).requires_grad_(True)
    b = (torch.randn(V, generator=g) * 0.1).to(dtype).requires_grad_(True) if bias else None
    th = torch.randn(B, T, HT, generator=g).to(dtype)
    tw = (torch.randn(V, HT, generator=g) * 0.5).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 0] = -100
    labels[1, 3] = -100
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, -1] = False
    return {"hidden": hidden, "weight": weight, "bias": b, "th": th, "tw": tw, "labels": labels, "mask": mask}


def _grads(x: dict) -> list[torch.Tensor]:
    out = [x["hidden"].grad, x["weight"].grad] + ([x["bias"].grad] if x["bias"] is not None else [])
    for t in (x["hidden"], x["weight"], x["bias"]):
        if t is not None:
            t.grad = None
    return out


@pytest.mark.parametrize("name", list(PARTS))
def test_value_and_gradients_equal_naive(name: str) -> None:
    x = _setup()
    s_logits = F.linear(x["hidden"], x["weight"], x["bias"])
    t_logits = F.linear(x["th"], x["tw"])
    ref = _naive(name, s_logits, t_logits, x["labels"], x["mask"])
    ref.backward()
    want = _grads(x)
    mask = x["mask"] & (x["labels"] != -100)
    student = HeadOutput(x["hidden"], x["weight"], x["bias"], torch.float32)
    teacher = HeadOutput(x["th"], x["tw"], None, torch.float32)
    # chunk_size 3 < N = 10, and not a divisor of it: a ragged last chunk.
    total, values = fused_loss(student, teacher, x["labels"], mask, [PARTS[name]], chunk_size=3)
    total.backward()
    got = _grads(x)
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values[0], ref.detach(), rtol=1e-5, atol=1e-6)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_several_terms_share_one_pass_with_their_weights() -> None:
    x = _setup()
    s_logits = F.linear(x["hidden"], x["weight"], x["bias"])
    t_logits = F.linear(x["th"], x["tw"])
    ref = 0.9 * _naive("kd", s_logits, t_logits, x["labels"], x["mask"]) + 0.1 * _naive(
        "ce", s_logits, t_logits, x["labels"], x["mask"]
    )
    ref.backward()
    want = _grads(x)
    mask = x["mask"] & (x["labels"] != -100)
    parts = [PARTS["kd"]._replace(weight=0.9), PARTS["ce"]._replace(weight=0.1)]
    student = HeadOutput(x["hidden"], x["weight"], x["bias"], torch.float32)
    total, _ = fused_loss(
        student, HeadOutput(x["th"], x["tw"], None, torch.float32), x["labels"], mask, parts, chunk_size=4
    )
    total.backward()
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-6)
    for g, w in zip(_grads(x), want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_teacher_logits_rows_serve_as_teacher() -> None:
    """A full teacher cache gives (B, T, V) logits: the student side stays fused."""
    x = _setup(bias=False)
    t_logits = F.linear(x["th"], x["tw"])
    ref = _naive("kd", F.linear(x["hidden"], x["weight"]), t_logits, x["labels"], x["mask"])
    ref.backward()
    want = _grads(x)
    mask = x["mask"] & (x["labels"] != -100)
    total, _ = fused_loss(
        HeadOutput(x["hidden"], x["weight"], None, torch.float32),
        t_logits,
        x["labels"],
        mask,
        [PARTS["kd"]],
        chunk_size=2,
    )
    total.backward()
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-6)
    for g, w in zip(_grads(x), want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_tied_head_accumulates_into_the_embedding() -> None:
    """The head weight is the embedding matrix: its gradient is the embedding's plus the head's."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(V, H)
    ids = torch.randint(0, V, (B, T))
    labels = torch.randint(0, V, (B, T))

    def hidden() -> torch.Tensor:
        return torch.tanh(emb(ids))

    ref = cross_entropy(F.linear(hidden(), emb.weight), labels)
    ref.backward()
    want = emb.weight.grad.clone()
    emb.weight.grad = None
    total, _ = fused_loss(
        HeadOutput(hidden(), emb.weight, None, torch.float32),
        None,
        labels,
        None,
        [PARTS["ce"]._replace(options=RowOptions())],
        chunk_size=3,
    )
    total.backward()
    torch.testing.assert_close(emb.weight.grad, want, rtol=1e-4, atol=1e-6)


def test_bf16_matches_naive_within_tolerance() -> None:
    x = _setup(torch.bfloat16)
    s_logits = F.linear(x["hidden"], x["weight"], x["bias"])
    t_logits = F.linear(x["th"], x["tw"])
    ref = _naive("kd", s_logits, t_logits, x["labels"], x["mask"])
    ref.backward()
    want = _grads(x)
    mask = x["mask"] & (x["labels"] != -100)
    total, _ = fused_loss(
        HeadOutput(x["hidden"], x["weight"], x["bias"], torch.bfloat16),
        HeadOutput(x["th"], x["tw"], None, torch.bfloat16),
        x["labels"],
        mask,
        [PARTS["kd"]],
        chunk_size=3,
    )
    total.backward()
    got = _grads(x)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.bfloat16
    torch.testing.assert_close(total, ref, rtol=2e-2, atol=1e-3)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.float(), w.float(), rtol=5e-2, atol=5e-3)


def test_single_position_and_all_masked() -> None:
    """T = 1 rows, and a batch where no position counts (0 with a gradient path, not NaN)."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 1, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    teacher = torch.randn(3, 1, V, generator=g)
    labels = torch.randint(0, V, (3, 1), generator=g)
    ref = kd_kl(F.linear(hidden, weight), teacher, TEMP)
    ref.backward()
    want = hidden.grad.clone()
    hidden.grad = None
    total, _ = fused_loss(
        HeadOutput(hidden, weight, None, torch.float32), teacher, labels, None, [PARTS["kd"]], chunk_size=2
    )
    total.backward()
    torch.testing.assert_close(hidden.grad, want, rtol=1e-4, atol=1e-6)
    none = torch.zeros(3, 1, dtype=torch.bool)
    hidden.grad = None
    total, _ = fused_loss(
        HeadOutput(hidden, weight, None, torch.float32), teacher, labels, none, [PARTS["kd"]]
    )
    total.backward()
    assert float(total.detach()) == 0.0 and torch.count_nonzero(hidden.grad) == 0


def test_mismatched_teacher_is_refused() -> None:
    x = _setup()
    with pytest.raises(ValueError, match="same of both"):
        fused_loss(
            HeadOutput(x["hidden"], x["weight"], None, torch.float32),
            torch.zeros(B, T, V + 1),
            x["labels"],
            None,
            [PARTS["kd"]],
        )


# -- wiring: a causal LM's head, the training loop, the fallbacks ----------------------------------------

transformers = pytest.importorskip("transformers")

from distil.api import distill  # noqa: E402
from distil.config import KDConfig, StudentTrainConfig  # noqa: E402
from distil.data.bundle import DataBundle  # noqa: E402
from distil.data.text import LANGUAGE_MODELING, TokenRowSplit  # noqa: E402
from distil.losses.fused import plan_fused  # noqa: E402
from distil.models import create_model  # noqa: E402

LM_VOCAB = 67


def _lm(model_type: str, hidden: int, seed: int, **extra: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    if model_type == "gpt2":
        config = {"model_type": "gpt2", "n_embd": hidden, "n_layer": 2, "n_head": 2, "n_positions": 64}
    else:
        config = {
            "model_type": "llama",
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
        }
    return create_model("hf-causal-lm", num_classes=LM_VOCAB, config={**config, **extra})


def _bundle(n: int = 8, t: int = 10) -> DataBundle:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, LM_VOCAB, (n, t + 1), generator=g)
    labels = ids[:, 1:].clone()
    labels[:, :3] = -100  # prompt tokens: no label, and no teacher term either
    split = TokenRowSplit(ids[:, :-1], labels)
    few = split.take(torch.arange(2))
    names = [str(i) for i in range(LM_VOCAB)]
    return DataBundle("tiny-lm", split, few, few, names, (), (), task=LANGUAGE_MODELING)


@pytest.mark.parametrize(("model_type", "tied"), [("llama", False), ("llama", True), ("gpt2", True)])
def test_head_output_gives_the_models_logits(model_type: str, tied: bool) -> None:
    extra = {"tie_word_embeddings": tied} if model_type == "llama" else {}
    lm = _lm(model_type, 16, 0, **extra).eval()
    ids = torch.randint(0, LM_VOCAB, (2, 7))
    out = lm(ids, head=False)
    assert isinstance(out, HeadOutput) and out.vocab == LM_VOCAB
    assert (out.weight is lm.hf.get_input_embeddings().weight) == tied
    torch.testing.assert_close(out.logits(), lm(ids))


def _train(
    fused: str, terms: dict[str, float], student_seed: int = 1, **kd: object
) -> tuple[torch.nn.Module, list]:
    teacher, student = _lm("llama", 24, 0), _lm("llama", 16, student_seed, tie_word_embeddings=True)
    cfg = StudentTrainConfig(
        epochs=1, batch_size=4, lr=1e-2, optimizer={"name": "adamw"}, teacher_cache="off", seed=0
    )
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = distill(
            teacher,
            student,
            _bundle(),
            cfg,
            KDConfig(terms=terms, temperature=2.0, fused=fused, **kd),
        )
    return result.model, [str(w.message) for w in seen if "kd.fused" in str(w.message)], result.history


@pytest.mark.parametrize("terms", [{"kd": 0.9, "ce": 0.1}, {"js": 1.0, "tvd": 0.5, "rkl": 0.2}])
def test_training_steps_fused_equal_unfused(terms: dict[str, float]) -> None:
    plain, notices, history = _train("off", terms)
    fused, fused_notices, fused_history = _train("on", terms)
    assert not notices and not fused_notices
    assert fused_history[0]["fused_head"] == "student+teacher" and "fused_head" not in history[0]
    untrained = _lm("llama", 16, 1, tie_word_embeddings=True).state_dict()
    assert not torch.equal(
        untrained["hf.model.embed_tokens.weight"], fused.state_dict()["hf.model.embed_tokens.weight"]
    )
    for (name, a), (_, b) in zip(plain.state_dict().items(), fused.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    for key in ("train_loss", *(f"train_{t}" for t in terms)):
        assert fused_history[0][key] == pytest.approx(history[0][key], rel=1e-4)


def test_under_bf16_autocast_the_head_runs_in_bf16_and_matches_unfused() -> None:
    """Mixed precision (the loop runs the student under autocast): the head's product is in autocast's
    bf16, as the model's own head would be; value and gradients match the unfused loss within bf16's."""
    from distil.losses.compose import build_loss
    from distil.losses.fused import FusedPlan

    teacher, student = _lm("llama", 24, 0).eval(), _lm("llama", 16, 1)
    ids = torch.randint(0, LM_VOCAB, (2, 9))
    batch = {"labels": torch.randint(0, LM_VOCAB, (2, 9))}
    kd = KDConfig(terms={"kd": 0.9, "ce": 0.1}, temperature=2.0)
    loss = build_loss(kd, student=student, teacher=teacher, sample_x=ids, num_classes=LM_VOCAB)
    results = []
    for plan in (None, FusedPlan(student=True, teacher=True)):
        loss.fused = plan
        with torch.no_grad():
            teacher_out = teacher(ids, **loss.model_call_options("teacher"))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            student_out = student(ids, **loss.model_call_options("student"))
        if plan is not None:
            assert isinstance(student_out, HeadOutput) and student_out.dtype == torch.bfloat16
        value = loss(student_out, teacher_out, batch)["loss"]
        student.zero_grad()
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in student.parameters()]))
    (plain, plain_grads), (fused, fused_grads) = results
    torch.testing.assert_close(fused, plain, rtol=1e-2, atol=1e-3)
    for a, b in zip(plain_grads, fused_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=5e-2, atol=5e-3 * float(a.abs().max()) + 1e-6)


def test_a_term_that_cannot_fuse_falls_back_with_a_notice() -> None:
    _, notices, history = _train("on", {"kd": 1.0, "dkd": 1.0})
    assert len(notices) == 1 and "terms dkd are not per-position losses" in notices[0]
    assert "fused_head" not in history[0]


def test_a_head_that_does_not_separate_falls_back_with_a_notice() -> None:
    """A step after the head (a soft-cap as gemma2's, here of logits as small as a fresh model's)."""
    student = _lm("llama", 16, 1)
    original = student.hf.forward

    def capped(*args: object, **kwargs: object) -> object:
        out = original(*args, **kwargs)
        cap = out.logits.abs().max() / 2
        out.logits = cap * torch.tanh(out.logits / cap)
        return out

    student.hf.forward = capped
    ids = torch.randint(0, LM_VOCAB, (1, 8))
    plan, notice = plan_fused(
        "on", student=student, teachers=[], terms={}, sample=ids, vocab=LM_VOCAB, sharded=False
    )
    assert plan is None and notice is not None and "not its head applied to its final hidden states" in notice
    plan, notice = plan_fused(
        "on", student=torch.nn.Linear(2, 2), teachers=[], terms={}, sample=ids, vocab=LM_VOCAB, sharded=False
    )
    assert plan is None and "not a Hugging Face causal LM" in str(notice)


def test_plan_modes_and_fsdp() -> None:
    student, ids = _lm("llama", 16, 1), torch.randint(0, LM_VOCAB, (1, 8))
    common = {"student": student, "teachers": [_lm("gpt2", 16, 0)], "terms": {}, "sample": ids}
    assert plan_fused("off", vocab=LM_VOCAB, sharded=False, **common) == (None, None)
    assert plan_fused("auto", vocab=LM_VOCAB, sharded=False, **common) == (None, None)  # small vocabulary
    plan, notice = plan_fused("auto", vocab=50000, sharded=False, **common)
    assert plan is not None and plan.student and plan.teacher and notice is None
    plan, notice = plan_fused("auto", vocab=50000, sharded=True, **common)
    assert plan is None and "train.fsdp shards the head weight" in str(notice)


def test_sparse_teacher_rows_fall_back_at_run_time_with_one_notice() -> None:
    from distil.losses.fused import FusedPlan
    from distil.losses.sparse import SparseTargets

    student = _lm("llama", 16, 1)
    ids = torch.randint(0, LM_VOCAB, (2, 6))
    from distil.losses.compose import ComposedLoss
    from distil.losses.logit import KDTerm
    from distil.losses.registry import TermContext

    loss = ComposedLoss({"kd": KDTerm(TermContext())}, {"kd": 1.0}, temperature=1.0)
    loss.fused = FusedPlan(student=True, teacher=False)
    assert loss.model_call_options("student") == {"head": False} and loss.model_call_options("teacher") == {}
    k = 3
    logits = torch.randn(2, 6, LM_VOCAB)
    top = torch.log_softmax(logits, -1).topk(k, -1)
    targets = SparseTargets("topk", top.indices, top.values, 1 - top.values.exp().sum(-1), 1.0, LM_VOCAB)
    batch = {"labels": torch.randint(0, LM_VOCAB, (2, 6))}
    want = loss(student(ids), targets, batch)["loss"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = [loss(student(ids, head=False), targets, batch)["loss"] for _ in range(2)]
    notes = [str(w.message) for w in seen]
    assert len(notes) == 1 and "sparse rows of a top-k/sampled cache" in notes[0]
    torch.testing.assert_close(got[0], want)
