"""Completions generated for a batch's prompts: prompt boundaries, left padding, the rewritten layout."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from distil.data.batch import IGNORE_INDEX, INPUTS, LABELS, MASK
from distil.errors import DataError, ModelError
from distil.measure.lm import decode, greedy_ids
from distil.models import create_model
from distil.train.completions import (
    Sampling,
    _hf_generate,
    check_can_generate,
    completion_end_problem,
    completion_lengths,
    generate_completions,
    left_padded_prompts,
    prompt_lengths,
)

EOS = 9
LLAMA = {
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 16,
}


def _batch() -> dict[str, torch.Tensor]:
    # Row 0: prompt [1, 2, 3], completion [4, EOS]; row 1: prompt [5], completion [6, 7, EOS]. T = 6.
    inputs = torch.tensor([[1, 2, 3, 4, EOS, EOS], [5, 6, 7, EOS, EOS, EOS]])
    labels = torch.tensor([[-100, -100, 4, EOS, -100, -100], [6, 7, EOS, -100, -100, -100]])
    return {INPUTS: inputs, LABELS: labels, "index": torch.tensor([3, 8])}


def test_prompt_lengths_are_one_past_the_first_labelled_position() -> None:
    assert prompt_lengths(_batch()[LABELS]).tolist() == [3, 1]
    with pytest.raises(DataError, match="no labelled token"):
        prompt_lengths(torch.full((2, 4), IGNORE_INDEX))


def test_prompts_are_right_aligned_behind_padding() -> None:
    ids, attention = left_padded_prompts(_batch()[INPUTS], torch.tensor([3, 1]), pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 5]]
    assert attention.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_a_completion_ends_at_its_first_end_of_sequence() -> None:
    generated = torch.tensor([[4, EOS, 4, EOS], [6, 6, 6, 6]])
    assert completion_lengths(generated, EOS).tolist() == [2, 4]


class _ScriptedLM(torch.nn.Module):
    """A causal LM whose step k says token ``new[b][k]`` for row b (its 'cache' counts the steps), so
    distil's decoder runs on it without sampling; it records what each forward call was given."""

    def __init__(self, new: list[list[int]], vocab: int = 12) -> None:
        super().__init__()
        self.new, self.vocab = torch.tensor(new), vocab
        self.config = SimpleNamespace(is_encoder_decoder=False)
        self.seen: list[dict[str, torch.Tensor | None]] = []

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: int | None = None,
        use_cache: bool = True,
    ) -> SimpleNamespace:
        step = past_key_values or 0
        self.seen.append(
            {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        )
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[:, -1].scatter_(1, self.new[:, step : step + 1], 1.0)
        return SimpleNamespace(logits=logits, past_key_values=step + 1)


def test_the_batch_is_rewritten_prompt_then_generation_with_labels_on_generated_tokens_only() -> None:
    model = _ScriptedLM([[7, EOS, 3, 3, 3, 3], [8, 8, 8, 8, 8, 8]])
    out = generate_completions(model, _batch(), Sampling(temperature=0), eos_id=EOS, pad_id=0)
    # The room after the longest prompt (3 of T = 6): 4 label positions, so 4 steps (row 1 never stops).
    assert len(model.seen) == 4
    assert out.batch[INPUTS].tolist() == [[1, 2, 3, 7, EOS, 0], [5, 8, 8, 8, 8, 0]]
    assert out.batch[LABELS].tolist() == [[-100, -100, 7, EOS, -100, -100], [8, 8, 8, 8, -100, -100]]
    assert out.batch[MASK].tolist() == (out.batch[LABELS] != -100).tolist()
    assert out.generated_tokens == 2 + 4
    assert out.batch["index"].tolist() == [3, 8]  # other keys pass through


def test_left_padded_prompts_get_their_mask_and_positions_and_the_mask_grows_each_step() -> None:
    model = _ScriptedLM([[7, 7, 7, 7], [8, 8, 8, 8]])
    generate_completions(model, _batch(), Sampling(temperature=0, max_new_tokens=3), eos_id=EOS, pad_id=0)
    prefill, second, third = model.seen
    assert prefill["input_ids"].tolist() == [[1, 2, 3], [0, 0, 5]]
    assert prefill["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert prefill["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]  # row 1 starts at its first token
    assert second["input_ids"].tolist() == [[7], [8]] and second["position_ids"].tolist() == [[3], [1]]
    assert second["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert third["position_ids"].tolist() == [[4], [2]] and third["attention_mask"].shape == (2, 5)


def test_an_end_of_sequence_stops_its_row_which_reads_and_writes_padding_after_it() -> None:
    model = _ScriptedLM([[EOS, 5, 5, 5], [4, 6, EOS, 5]])
    out = generate_completions(model, _batch(), Sampling(temperature=0), eos_id=EOS, pad_id=0)
    assert len(model.seen) == 3  # every row ended: no fourth step
    assert [step["input_ids"].tolist() for step in model.seen[1:]] == [[[EOS], [4]], [[0], [6]]]
    assert out.batch[INPUTS].tolist() == [[1, 2, 3, EOS, 0, 0], [5, 4, 6, EOS, 0, 0]]
    assert out.batch[LABELS].tolist() == [[-100, -100, EOS, -100, -100, -100], [4, 6, EOS, -100, -100, -100]]
    assert out.generated_tokens == 1 + 3


def test_max_new_tokens_caps_the_completion() -> None:
    model = _ScriptedLM([[7, 7, 7, 7], [8, 8, 8, 8]])
    out = generate_completions(model, _batch(), Sampling(temperature=0, max_new_tokens=2), eos_id=EOS)
    assert len(model.seen) == 2
    assert out.batch[LABELS].tolist() == [[-100, -100, 7, 7, -100, -100], [8, 8, -100, -100, -100, -100]]


class _GenerateOnly(torch.nn.Module):
    """A 'model' with a transformers-style generate() and no forward the decoder can drive."""

    def __init__(self, new: list[list[int]]) -> None:
        super().__init__()
        self.new = torch.tensor(new)
        self.seen: dict[str, object] = {}

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: object
    ) -> torch.Tensor:
        config = kwargs["generation_config"]
        self.seen = {"attention_mask": attention_mask, **config.to_dict()}  # type: ignore[attr-defined]
        return torch.cat([input_ids, self.new[:, : int(config.max_new_tokens)]], dim=1)  # type: ignore[attr-defined]


def test_a_model_the_decoder_cannot_drive_generates_with_its_own_generate_and_says_so() -> None:
    model = _GenerateOnly([[7, EOS, 3, 3], [8, 8, 8, 8]])
    with pytest.warns(UserWarning, match="_GenerateOnly: generating with transformers' generate"):
        out = generate_completions(model, _batch(), Sampling(temperature=0), eos_id=EOS, pad_id=0)
    assert model.seen["max_new_tokens"] == 4 and model.seen["do_sample"] is False
    assert out.batch[INPUTS].tolist() == [[1, 2, 3, 7, EOS, 0], [5, 8, 8, 8, 8, 0]]


GPT2 = {"model_type": "gpt2", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}


def _tiny_llama(config: dict[str, object] = LLAMA) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("hf-causal-lm", num_classes=12, config=config).eval()


def _left_padded(rows: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    inputs = torch.randint(0, 12, (rows, 6))
    return left_padded_prompts(inputs, torch.tensor([5, 1, 3, 2][:rows]), pad_id=0)


@pytest.mark.parametrize("config", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_greedy_decoding_of_left_padded_prompts_equals_transformers_generate(
    config: dict[str, object],
) -> None:
    hf = _tiny_llama(config).hf
    prompts, attention = _left_padded()
    want = _hf_generate(hf, prompts, attention, Sampling(temperature=0), 6, eos_id=-1, pad_id=0)
    eos = int(want[0, 1])  # a token row 0 says second: row 0 (and maybe others) stops early
    want = _hf_generate(hf, prompts, attention, Sampling(temperature=0), 6, eos_id=eos, pad_id=0)
    got = decode(hf, prompts, 6, attention_mask=attention, stop_ids=(eos,), pad_id=0)[0]
    assert torch.equal(got, want)


def test_sampling_draws_as_transformers_generate_does_from_the_same_seed() -> None:
    hf = _tiny_llama().hf
    prompts, attention = _left_padded()
    sampling = Sampling(temperature=0.7, top_p=0.9)
    torch.manual_seed(3)
    want = _hf_generate(hf, prompts, attention, sampling, 6, eos_id=11, pad_id=0)
    torch.manual_seed(3)
    got = decode(
        hf, prompts, 6, attention_mask=attention, temperature=0.7, top_p=0.9, stop_ids=(11,), pad_id=0
    )
    assert torch.equal(got[0], want)


def test_a_tiny_top_p_keeps_only_the_most_likely_token() -> None:
    model = _tiny_llama()
    greedy = generate_completions(model, _batch(), Sampling(temperature=0), eos_id=11).batch[INPUTS]
    nucleus = generate_completions(model, _batch(), Sampling(temperature=1.0, top_p=1e-6), eos_id=11)
    assert torch.equal(nucleus.batch[INPUTS], greedy)


def test_greedy_completions_of_prompts_of_different_lengths_match_one_by_one_decoding() -> None:
    torch.manual_seed(0)
    model = create_model("hf-causal-lm", num_classes=12, config=LLAMA)
    # A checkpoint's own generation settings are not applied: distil samples from the model as it is.
    model.hf.generation_config.suppress_tokens = [t for t in range(12) if t != 5]
    batch = _batch()
    out = generate_completions(model, batch, Sampling(temperature=0, max_new_tokens=3), eos_id=11)
    for row, p in enumerate([3, 1]):
        alone = greedy_ids(model, batch[INPUTS][row, :p], 3)[0].tolist()
        assert out.batch[INPUTS][row, p : p + 2].tolist() == alone[:2]
        assert out.batch[LABELS][row, p - 1 : p + 2].tolist() == alone


def test_sampling_draws_from_the_global_rng_so_a_seed_repeats_it() -> None:
    torch.manual_seed(0)
    model = create_model("hf-causal-lm", num_classes=12, config=LLAMA)
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        draws.append(
            generate_completions(model, _batch(), Sampling(temperature=1.0), eos_id=11).batch[INPUTS]
        )
    assert torch.equal(draws[0], draws[1])


def test_a_model_that_cannot_generate_is_named() -> None:
    with pytest.raises(ModelError, match="cannot generate"):
        generate_completions(torch.nn.Linear(2, 2), _batch(), Sampling(), eos_id=EOS)


def test_a_model_may_end_its_completion_at_once_as_the_data_can() -> None:
    # An empty answer is the end-of-sequence token alone (labelled). Forbidding it at the first step
    # (min_new_tokens) would make the teacher's greedy completion one it would not give, silently.
    torch.manual_seed(0)
    model = create_model("hf-causal-lm", num_classes=12, config=LLAMA)
    batch = _batch()
    first = int(greedy_ids(model, batch[INPUTS][0, :3], 1)[0, 0])
    out = generate_completions(model, batch, Sampling(temperature=0), eos_id=first, pad_id=0)
    assert out.batch[LABELS][0].tolist() == [-100, -100, first, -100, -100, -100]


class _Rows:
    """A split of the given (B, T) labels, read as `prompt_rows_problem` reads one."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def batches(self, batch_size: int):  # type: ignore[no-untyped-def]
        yield {LABELS: self.labels, "index": torch.arange(len(self.labels))}


def test_a_completion_without_the_end_of_sequence_id_is_named() -> None:
    labels = _batch()[LABELS]
    assert completion_end_problem(_Rows(labels), EOS) is None
    # Row 1 ends its answer with 7 (a chat template's end of turn), not EOS: generation would run on.
    unended = torch.tensor([[-100, -100, 4, EOS, -100, -100], [6, 7, 7, -100, -100, -100]])
    assert completion_end_problem(_Rows(unended), EOS) == (
        "training sample 1 has a completion without the end-of-sequence id 9 (it ends with token 7), so a "
        "generated completion would not stop where the data's answers stop"
    )
    # A completion cut by the block (labelled to the last position) cannot hold its EOS: not counted.
    cut = torch.tensor([[-100, -100, 4, 5, 6, 7]])
    assert completion_end_problem(_Rows(cut), EOS) is None


MISTRAL_WINDOW = {**LLAMA, "model_type": "mistral", "sliding_window": 2}


@pytest.mark.parametrize(
    ("config", "attention"),
    [(LLAMA, "sdpa"), (LLAMA, "eager"), (GPT2, "sdpa"), (MISTRAL_WINDOW, "sdpa")],
    ids=["llama", "llama-eager", "gpt2", "mistral-window-2"],
)
def test_static_and_dynamic_caches_decode_what_generate_does(
    config: dict[str, object], attention: str
) -> None:
    from distil.measure.lm import _static_cache

    hf = _tiny_llama(config).hf
    hf.set_attn_implementation(attention)  # eager's prepared mask is additive floats, sdpa's booleans
    assert _static_cache(hf, 12) is not None  # the static path is really taken
    prompts, mask = _left_padded()
    first = _hf_generate(hf, prompts, mask, Sampling(temperature=0), 6, eos_id=-1, pad_id=0)
    eos = int(first[0, 1])  # row 0 stops at its second token, the others when they say it (per-row stop)
    want = _hf_generate(hf, prompts, mask, Sampling(temperature=0), 6, eos_id=eos, pad_id=0)
    got = {
        static: decode(hf, prompts, 6, attention_mask=mask, stop_ids=(eos,), pad_id=0, static_cache=static)[0]
        for static in (True, False)
    }
    assert torch.equal(got[True], want) and torch.equal(got[False], want)


def test_a_static_cache_is_refused_with_the_fix_for_a_model_that_cannot_take_one() -> None:
    model = _ScriptedLM([[7, 7], [8, 8]])
    with pytest.raises(ModelError, match=r"cannot decode with a static KV cache.*static_cache=None"):
        decode(model, torch.tensor([[1], [2]]), 2, static_cache=True)
    assert decode(model, torch.tensor([[1], [2]]), 2)[0].tolist() == [[7, 7], [8, 8]]  # dynamic fallback


def test_the_attention_mask_is_built_once_per_decode_not_once_per_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers.masking_utils import AttentionMaskInterface

    built = []
    sdpa = AttentionMaskInterface._global_mapping["sdpa"]

    def counted(*args: object, **kwargs: object) -> object:
        built.append(kwargs["q_length"])
        return sdpa(*args, **kwargs)

    monkeypatch.setitem(AttentionMaskInterface._global_mapping, "sdpa", counted)
    hf = _tiny_llama().hf
    prompts, attention = _left_padded()
    for cache in ({}, {"static_cache": False}):  # the default (static here) and the dynamic cache
        built.clear()
        decode(hf, prompts, 5, attention_mask=attention, **cache)
        assert built == [prompts.shape[1] + 5]  # one (B, 1, P + new, P + new) mask for every step


def test_sliding_window_attention_keeps_building_its_own_masks() -> None:
    # One prepared 4D mask would give every layer full attention: a window model is left to build its own.
    from distil.measure.lm import _prepared_mask

    hf = _tiny_llama(MISTRAL_WINDOW).hf
    assert _prepared_mask(hf, torch.ones(2, 8, dtype=torch.long)) is None
    assert _prepared_mask(_tiny_llama().hf, torch.ones(2, 8, dtype=torch.long)) is not None


def test_checking_for_the_stop_every_few_steps_returns_what_checking_every_step_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On an accelerator the all-stopped check (a wait for the device) runs every few steps; the steps
    # decoded after every row stopped are cut, so the ids are those of a check at every step.
    import distil.measure.lm as lm

    hf = _tiny_llama().hf
    prompts, mask = _left_padded()
    stops = tuple(decode(hf, prompts, 8, attention_mask=mask)[0][:, 1].tolist())  # every row stops by step 2
    pads = (None, 0)  # finished rows repeat the model's ids, or write padding
    want = [decode(hf, prompts, 8, attention_mask=mask, stop_ids=stops, pad_id=pad)[0] for pad in pads]
    assert want[0].shape[1] <= 2
    monkeypatch.setattr(lm, "_stop_check_every", lambda device: 5)
    got = [decode(hf, prompts, 8, attention_mask=mask, stop_ids=stops, pad_id=pad)[0] for pad in pads]
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_a_mask_too_large_to_prepare_is_left_to_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import distil.measure.lm as lm

    hf = _tiny_llama().hf
    grown = torch.ones(2, 8, dtype=torch.long)
    assert lm._prepared_mask(hf, grown) is not None
    monkeypatch.setattr(lm, "PREPARED_MASK_BYTES", 2 * 8 * 8 - 1)  # one byte short of (2, 1, 8, 8) booleans
    assert lm._prepared_mask(hf, grown) is None
    prompts, mask = _left_padded()
    want = _hf_generate(hf, prompts, mask, Sampling(temperature=0), 6, eos_id=-1, pad_id=0)
    assert torch.equal(decode(hf, prompts, 6, attention_mask=mask)[0], want)  # the 2D mask path


# --- The compiled one-token step (decode(compile_step=True)) ------------------------------------------


@pytest.fixture(scope="module")
def compiled_llama() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny llama whose step is compiled once (the first decode), shared by the compile tests."""
    from torch._dynamo.utils import counters

    model = _tiny_llama()
    prompts, mask = _left_padded()
    torch._dynamo.reset()  # other tests' graphs of the step: a guard failing on them would count as a recompile
    graphs = counters["stats"]["unique_graphs"]
    decode(model.hf, prompts, 6, attention_mask=mask, compile_step=True)
    assert counters["stats"]["unique_graphs"] > graphs  # the step really was compiled
    return model, prompts, mask


def _both(hf: torch.nn.Module, prompts: torch.Tensor, mask: torch.Tensor, new: int, **kw: object) -> list:
    """Eager and compiled decoding of the same call, each from seed 3 (so sampling draws alike)."""
    out = []
    for compiled in (False, True):
        torch.manual_seed(3)
        out.append(decode(hf, prompts, new, attention_mask=mask, compile_step=compiled, **kw)[0])  # type: ignore[arg-type]
    return out


@pytest.mark.slow
def test_the_compiled_step_decodes_what_eager_decoding_does(
    compiled_llama: tuple[torch.nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, prompts, mask = compiled_llama
    first = decode(model.hf, prompts, 6, attention_mask=mask)[0]
    eos = int(first[0, 1])  # row 0 stops at its second token, the others when they say it (per-row stop)
    eager, compiled = _both(model.hf, prompts, mask, 6, stop_ids=(eos,), pad_id=0)
    assert torch.equal(compiled, eager) and (compiled == eos).any(dim=1).sum() >= 1
    eager, compiled = _both(model.hf, prompts, mask, 6, temperature=0.7, top_p=0.9, stop_ids=(11,), pad_id=0)
    assert torch.equal(compiled, eager)  # sampled: the same draws from the same seed


@pytest.mark.slow
def test_other_prompts_budgets_and_updated_weights_reuse_the_compiled_step(
    compiled_llama: tuple[torch.nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, prompts, mask = compiled_llama
    torch.manual_seed(4)
    longer, longer_mask = left_padded_prompts(torch.randint(0, 12, (4, 9)), torch.tensor([9, 2, 7, 4]), 0)
    with torch.no_grad():  # an optimizer's in-place update between two generations
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    with torch._dynamo.config.patch(error_on_recompile=True):  # any recompilation fails the test
        for ids, attention, new in ((longer, longer_mask, 20), (prompts, mask, 3)):
            eager, compiled = _both(model.hf, ids, attention, new, stop_ids=(11,), pad_id=0)
            assert torch.equal(compiled, eager)
    # A batch of another size (a last partial batch) decodes eagerly, the same ids, nothing compiled.
    with torch._dynamo.config.patch(error_on_recompile=True):
        eager, compiled = _both(model.hf, prompts[:3], mask[:3], 6)
    assert torch.equal(compiled, eager)


@pytest.mark.slow
def test_the_compiled_step_of_other_architectures_decodes_what_eager_decoding_does() -> None:
    # gpt2 has learned positions and builds its own mask; one graph serves all its steps.
    hf = _tiny_llama(GPT2).hf
    prompts, mask = _left_padded()
    torch.manual_seed(3)
    eager = decode(hf, prompts, 6, attention_mask=mask, stop_ids=(11,), pad_id=0)[0]
    torch.manual_seed(3)
    decode(hf, prompts, 2, attention_mask=mask, compile_step=True)  # compiles the step (its second token)
    with torch._dynamo.config.patch(error_on_recompile=True):  # no step of the call recompiles
        compiled = decode(hf, prompts, 6, attention_mask=mask, stop_ids=(11,), pad_id=0, compile_step=True)[0]
    assert torch.equal(compiled, eager)


def test_a_sliding_window_model_is_refused_a_compiled_step_with_the_fix() -> None:
    # Its cache layers count their position in a Python int: dynamo would recompile at every step, reach
    # its recompile limit and then run the shared step eagerly for every model of the process.
    hf = _tiny_llama(MISTRAL_WINDOW).hf
    prompts, mask = _left_padded()
    with pytest.raises(ModelError, match=r"sliding window.*compile_step=False"):
        decode(hf, prompts, 2, attention_mask=mask, compile_step=True)
    with pytest.raises(ModelError, match=r"sliding window"):
        check_can_generate(_tiny_llama(MISTRAL_WINDOW), compile_step=True)


def test_a_compiled_step_is_refused_with_the_fix_for_a_model_that_cannot_take_a_static_cache() -> None:
    model = _ScriptedLM([[7, 7], [8, 8]])
    with pytest.raises(
        ModelError,
        match=r"cannot decode with a compiled step: it cannot take a static KV cache.*compile_step=False",
    ):
        decode(model, torch.tensor([[1], [2]]), 2, compile_step=True)
    assert not model.seen  # refused before any forward
    # And before a run trains (check_on_policy asks this of the student).
    check_can_generate(model)
    with pytest.raises(
        ModelError, match=r"_ScriptedLM cannot generate with the compiled.*static KV cache.*=false"
    ):
        check_can_generate(model, compile_step=True)


def test_the_generation_settings_carry_the_compiled_step_to_the_decoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distil.train import completions

    seen: dict[str, object] = {}

    def spy(*args: object, **kwargs: object) -> tuple[torch.Tensor, float]:
        seen.update(kwargs)
        return torch.full((2, 1), EOS), 0.0

    monkeypatch.setattr(completions, "decode", spy)
    generate_completions(_tiny_llama(), _batch(), Sampling(temperature=0, compile_step=True), eos_id=EOS)
    assert seen["compile_step"] is True


def test_a_compiler_failure_stops_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from distil.measure import lm

    def broken(*args: object) -> torch.Tensor:
        raise torch._dynamo.exc.BackendCompilerFailed(
            "inductor", RuntimeError("InvalidCxxCompiler: No working C++ compiler found"), None
        )

    monkeypatch.setattr(lm, "_compiled_step_fn", lambda: broken)
    hf = _tiny_llama().hf
    with pytest.raises(
        ModelError,
        match=r"decoding step of LlamaForCausalLM failed \(RuntimeError: InvalidCxxCompiler.*compile_step",
    ):
        decode(hf, torch.tensor([[1, 2], [3, 4]]), 3, compile_step=True)


def test_another_autocast_gets_its_own_compiled_step_cache() -> None:
    # A cache written under bf16 autocast cannot take a plain fp32 step's keys (index_copy_ dtypes).
    from distil.measure.lm import _compiled_for

    hf = _tiny_llama().hf
    plain = _compiled_for(hf, 2, 10, torch.device("cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _compiled_for(hf, 2, 10, torch.device("cpu"))
    assert plain is not None and mixed is not None and mixed.cache is not plain.cache
    assert _compiled_for(hf, 2, 10, torch.device("cpu")).cache is not mixed.cache  # back to plain: new again


def test_asking_the_compiled_step_for_more_shapes_than_dynamo_compiles_warns_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past torch._dynamo's recompile limit the shared step runs eagerly for every model: say so, once.
    from distil.measure import lm

    monkeypatch.setattr(lm, "_GRAPHS", set())
    limit = torch._dynamo.config.recompile_limit
    for rows in range(limit):
        lm._note_graph(("llama", rows, 64, None))
    with pytest.warns(UserWarning, match=r"past torch._dynamo's recompile limit.*Fix: fewer shapes"):
        lm._note_graph(("llama", limit, 64, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the next shape, and a repeated one, say nothing more
        lm._note_graph(("llama", limit + 1, 64, None))
        lm._note_graph(("llama", 0, 64, None))
