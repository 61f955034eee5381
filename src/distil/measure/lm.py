"""Generation measurements of causal LMs: latency per generated token with the KV cache, greedy samples.

A language model is used one token at a time: after the prompt has been read once (prefill), each new
token costs one forward pass over one position, reusing the keys and values of the earlier positions
(the KV cache). :func:`generation_latency` times exactly that loop, greedy, so a teacher and a student
timed side by side compare what a user waits for per token. :func:`greedy_samples` shows what they say.
"""

from __future__ import annotations

import inspect
import statistics
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from distil.errors import ModelError


@dataclass(frozen=True)
class GenerationLatency:
    """Greedy decoding times of one model (medians over the timed repeats, after warm-up).

    Attributes:
        ms_per_token: median milliseconds of one decoding step (one new token, KV cache on).
        prefill_ms: median milliseconds to read the prompt (and produce the first new token).
        prompt_tokens: prompt length T.
        new_tokens: tokens generated per repeat.
        batch: sequences decoded together.
        repeats: timed repeats (each after `warmup` untimed ones).
        device: where it ran.
    """

    ms_per_token: float
    prefill_ms: float
    prompt_tokens: int
    new_tokens: int
    batch: int
    repeats: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for reports and JSON)."""
        return asdict(self)


def _hf(model: nn.Module) -> Any:
    hf = getattr(model, "hf", model)
    if not hasattr(hf, "config") or not callable(hf):
        raise ModelError(
            f"{type(model).__name__} is not a Hugging Face causal LM; generation measurements need one "
            "(hf-causal-lm)."
        )
    return hf


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _as_batch(prompt_ids: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    ids = torch.as_tensor(prompt_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ModelError(
            f"a prompt must be token ids (T,) or (B, T) with T >= 1; got shape {tuple(ids.shape)}"
        )
    return ids.to(device)


def _cache_argument(hf: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    try:
        params = inspect.signature(hf.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out: Any) -> Any:
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


def _accepts(hf: Any) -> frozenset[str]:
    """The names `hf.forward` takes (empty when its signature cannot be read)."""
    try:
        return frozenset(inspect.signature(hf.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def decode_problem(hf: Any) -> str | None:
    """Why :func:`decode` cannot drive `hf` (left-padded prompts need its mask and positions), or None.

    The decoder passes the attention mask, explicit position ids (left padding shifts every row's
    positions) and the KV cache by name; a forward without one of them (an encoder-decoder, a
    state-space model's ``cache_params``) would decode another continuation than transformers' own
    ``generate`` gives it.
    """
    if getattr(getattr(hf, "config", None), "is_encoder_decoder", False):
        return "an encoder-decoder model"
    takes = _accepts(hf)
    missing = [name for name in ("attention_mask", "position_ids", _cache_argument(hf)) if name not in takes]
    if missing:
        return f"its forward takes no {', '.join(missing)}"
    return None


def _next_token(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(B,) the next ids from last-position `logits` (B, V): argmax at temperature 0, else a draw.

    The draw is transformers' own: logits divided by the temperature, nucleus (top-p) filtering that
    keeps the smallest set of tokens whose probability reaches `top_p` (at least one), then one
    ``torch.multinomial`` draw per row from the global RNG, so a seed repeats it.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    scores = logits.float() / temperature
    if top_p < 1.0:
        ordered, order = scores.sort(dim=-1)
        drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[:, -1] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1)


def _static_cache(hf: Any, length: int) -> Any | None:
    """transformers' ``StaticCache`` of `length` positions for `hf`, or None where `hf` cannot take one.

    A static cache is allocated once and written in place, where the dynamic one concatenates every
    layer's keys and values at every step. transformers itself lets a model use one (``generate``'s
    ``cache_implementation="static"``, ``torch.compile``) when the class says ``_can_compile_fullgraph``
    and takes transformers' ``Cache`` objects (``_supports_default_dynamic_cache``).
    """
    model_class = type(hf)
    takes_cache = getattr(model_class, "_supports_default_dynamic_cache", None)
    if not getattr(model_class, "_can_compile_fullgraph", False) or takes_cache is None or not takes_cache():
        return None
    try:
        from transformers import StaticCache
    except ImportError:  # a transformers without it: the dynamic cache is the fallback
        return None
    return StaticCache(config=hf.config, max_cache_len=length)


def compile_step_problem(hf: Any) -> str | None:
    """Why :func:`decode` cannot run `hf` with ``compile_step=True``, or None (checked before a run trains)."""
    problem = decode_problem(hf)
    if problem is not None:
        return f"distil's decoder cannot drive it ({problem})"
    cache = _static_cache(hf, 1)  # allocates nothing: its tensors come with the first write
    if cache is None:
        return (
            "it cannot take a static KV cache (transformers allows one only for models whose class sets "
            "_can_compile_fullgraph)"
        )
    if _has_sliding_layers(cache):
        return (
            "it attends through a sliding window, whose cache layers count their position in a Python "
            "int: the compiled step would recompile at every step and then run eagerly"
        )
    return None


def _has_sliding_layers(cache: Any) -> bool:
    return any(getattr(cache, "is_sliding", None) or ())


def _choose_cache(hf: Any, length: int, static_cache: bool | None, device: torch.device) -> Any | None:
    """The cache to start decoding with: a static one (see :func:`_static_cache`) or None (the model's own).

    The default (`static_cache` None) is the dynamic cache on the CPU, where it measured faster
    (``benchmarks/generation_speed.py``: the static cache attends over its whole length at every step,
    which costs more there than the concatenation it saves), and the static one elsewhere.
    """
    if static_cache is False or (static_cache is None and device.type == "cpu"):
        return None
    cache = _static_cache(hf, length)
    if cache is None and static_cache:
        raise ModelError(
            f"{type(hf).__name__} cannot decode with a static KV cache (transformers allows one only for "
            "models whose class sets _can_compile_fullgraph); pass static_cache=None to fall back to the "
            "dynamic cache."
        )
    return cache


def _grown_mask(attention_mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """(B, P + new_tokens): the prompts' mask, then ones for every position decoding can write.

    Allocated once: step s reads the first P + s columns (a view) where growing the mask by one column
    per step would copy it every step.
    """
    rows, length = attention_mask.shape
    grown = attention_mask.new_ones(rows, length + new_tokens)
    grown[:, :length] = attention_mask
    return grown


PREPARED_MASK_BYTES = 64 * 2**20
"""The largest (B, 1, L, L) attention mask :func:`decode` builds once per call (else the model's per step)."""


def _one_causal_mask(config: Any) -> bool:
    """Whether every layer of `config`'s model attends through one causal mask (no sliding window, no
    chunked or linear attention) built by transformers' sdpa or eager mask function, so a 4D mask built
    once by that function is what the model would build itself at every step."""
    layers = getattr(config, "layer_types", None) or ["full_attention"]
    return (
        getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
        and set(layers) == {"full_attention"}
        and getattr(config, "sliding_window", None) is None
        and getattr(config, "attention_chunk_size", None) is None
        and getattr(config, "is_causal", True)
    )


def _prepared_mask(hf: Any, grown: torch.Tensor) -> torch.Tensor | None:
    """(B, 1, L, L) `hf`'s own 4D attention mask over all L = P + new positions, or None.

    transformers rebuilds the 4D mask from the 2D one at every forward (a tenth of a small model's step
    on the CPU); a 4D mask is taken as already prepared, so decoding builds it once, with transformers'
    own function, and passes one slice per step. Only for models that attend through that one mask
    (:func:`_one_causal_mask`) and mark themselves as built on transformers' mask utilities
    (``_can_compile_fullgraph``), and only up to :data:`PREPARED_MASK_BYTES` (it saves a fixed cost per
    step, which matters for small models and batches, where the mask is small); None for the rest, which
    get the 2D mask as before.
    """
    config = getattr(hf, "config", None)
    if (
        not getattr(type(hf), "_can_compile_fullgraph", False)
        or config is None
        or not _one_causal_mask(config)
    ):
        return None
    try:
        from transformers.masking_utils import create_causal_mask
    except ImportError:
        return None
    rows, length = grown.shape
    itemsize = 1 if config._attn_implementation == "sdpa" else hf.dtype.itemsize  # bool, else additive
    if rows * length * length * itemsize > PREPARED_MASK_BYTES:
        return None
    shape_only = torch.empty(rows, length, 0, dtype=hf.dtype, device=grown.device)  # batch, length, dtype
    mask = create_causal_mask(
        config=config,
        inputs_embeds=shape_only,
        attention_mask=grown,
        cache=None,
        allow_is_causal_skip=False,
    )
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (rows, 1, length, length):
        return None
    return mask


def _stop_check_every(device: torch.device) -> int:
    """Steps between checks that every row has stopped: each check waits for the device (``bool`` of a
    device tensor), so on an accelerator it is made every 8 steps, and the extra steps are cut after."""
    return 1 if device.type == "cpu" else 8


def _steps_until_all_stopped(new: torch.Tensor, stop: torch.Tensor) -> int:
    """The columns of (B, S) `new` up to the first one by which every row has produced a stop id (all S
    when some row never did): what decoding with a check at every step returns."""
    stopped = torch.isin(new, stop).cummax(dim=1).values.all(dim=0)
    return int(stopped.int().argmax()) + 1 if bool(stopped.any()) else new.shape[1]


CACHE_BUCKET = 64
"""The compiled step's static cache length is prompt + new tokens rounded up to a multiple of this."""


def _one_step(
    hf: Any,
    ids: torch.Tensor,
    position: torch.Tensor,
    mask: torch.Tensor,
    cache: Any,
    name: str,
    fixed: dict[str, Any],
) -> torch.Tensor:
    """(B, V) the last-position logits of one decoding step of `hf` on (B, 1) `ids`: the function compiled.

    Every input whose value changes from step to step is a tensor of a fixed shape: the position ids
    (B, 1), the mask (one row of the prepared 4D mask, (B, 1, 1, L), or the 2D mask (B, L)), and the
    static cache, which counts its own write position in a tensor. So one graph serves every step.
    """
    out = hf(input_ids=ids, attention_mask=mask, position_ids=position, **{name: cache}, **fixed)
    return out.logits[:, -1]


@dataclass
class _CompiledStep:
    """A model's compiled one-token step and the static cache it writes into, reused by every call.

    Attributes:
        rows: the batch size it serves (the first one decoded; other batches decode eagerly).
        length: the static cache's positions (a multiple of :data:`CACHE_BUCKET`; only grows).
        cache: transformers' ``StaticCache``, reset at each call: its tensors keep their addresses.
        where: the device, dtype and autocast dtype it was made for (a moved or cast model, or another
            autocast, gets a new one).
    """

    rows: int
    length: int
    cache: Any
    where: tuple[torch.device, torch.dtype | None, torch.dtype | None]


_COMPILED: weakref.WeakKeyDictionary[Any, _CompiledStep] = weakref.WeakKeyDictionary()
_STEP: list[Callable[..., torch.Tensor]] = []  # the torch.compile wrapper of _one_step, made once


def _compiled_step_fn() -> Callable[..., torch.Tensor]:
    """`_one_step` compiled (once per process: dynamo keeps its graphs per code object, under guards).

    ``dynamic=False``: a graph per architecture, batch size and cache length, specialised to those
    shapes (models alike in them share it: the parameters are graph inputs); :func:`_compiled_for` keeps
    those few per run. The model is an argument, not a closure, so no graph keeps a model alive.
    """
    if not _STEP:
        _STEP.append(torch.compile(_one_step, dynamic=False))
    return _STEP[0]


def _run_compiled(hf: Any, *args: Any) -> torch.Tensor:
    """The compiled step on `args` (as :func:`_one_step` takes them after `hf`).

    Raises:
        ModelError: the compiler failed (the first call compiles), e.g. no C++ compiler on a CPU machine.
    """
    try:
        return _compiled_step_fn()(hf, *args)
    except torch._dynamo.exc.BackendCompilerFailed as err:
        cause = err.inner_exception
        first_line = (str(cause).strip().splitlines() or [""])[0]
        why = f"{type(cause).__name__}: {first_line}"
        raise ModelError(
            f"compiling the decoding step of {type(hf).__name__} failed ({why}); "
            "install what the compiler needs (a C++ compiler such as gcc on a CPU machine) or decode "
            "eagerly: compile_step=False (generation.compile_step: false)."
        ) from err


def _bucket(length: int) -> int:
    return -(-length // CACHE_BUCKET) * CACHE_BUCKET


def _compiled_for(hf: Any, rows: int, length: int, device: torch.device) -> _CompiledStep | None:
    """`hf`'s compiled step for `rows` sequences of up to `length` positions, its cache reset; None for a
    batch of another size than the one it serves (decoded eagerly: a last partial batch would otherwise
    compile a second graph, minutes on a CPU, for one batch an epoch).

    The first call makes it; a later call needing more positions grows the cache to the next bucket
    (the step then compiles once more for that length); fewer positions reuse the larger cache, masked.

    Raises:
        ModelError: `hf` cannot run the compiled step (:func:`compile_step_problem`: no static cache,
            or a sliding window).
    """
    autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    where = (device, getattr(hf, "dtype", None), autocast)
    state = _COMPILED.get(hf)
    if state is not None and state.where == where and state.rows != rows:
        return None
    if state is None or state.where != where or state.length < length:
        problem = compile_step_problem(hf)
        if problem is not None:
            raise ModelError(
                f"{type(hf).__name__} cannot decode with a compiled step: {problem}. Fix: decode eagerly, "
                "compile_step=False (generation.compile_step: false)."
            )
        cache = _static_cache(hf, _bucket(length))
        state = _CompiledStep(rows=rows, length=_bucket(length), cache=cache, where=where)
        _COMPILED[hf] = state
        _note_graph((type(hf), rows, state.length, where))
    state.cache.reset()
    return state


_GRAPHS: set[tuple[Any, ...]] = set()


def _note_graph(key: tuple[Any, ...]) -> None:
    """Count the graphs the shared compiled step needs in this process (architecture, batch, cache
    length, precision); past dynamo's recompile limit it stops compiling and runs the step eagerly for
    every model, so say so once, with what to do."""
    _GRAPHS.add(key)
    limit = getattr(torch._dynamo.config, "recompile_limit", None)
    if limit is not None and len(_GRAPHS) == limit + 1:
        warnings.warn(
            f"the compiled decoding step has now been asked for {len(_GRAPHS)} shapes in this process "
            f"(architectures x batch sizes x cache lengths x precisions), past torch._dynamo's recompile "
            f"limit of {limit}: new shapes decode eagerly from here (the same ids, without the speed-up). "
            "Fix: fewer shapes per process (one batch size, budgets within one 64-position bucket), or "
            "raise torch._dynamo.config.recompile_limit.",
            stacklevel=4,
        )


@torch.inference_mode()
def decode(
    hf: Any,
    ids: torch.Tensor,
    new_tokens: int,
    *,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_ids: Sequence[int] = (),
    pad_id: int | None = None,
    static_cache: bool | None = None,
    compile_step: bool = False,
    times: list[float] | None = None,
) -> tuple[torch.Tensor, float]:
    """Decode with the KV cache: prefill once, then one position per step. The one decoder of distil.

    Args:
        hf: a transformers causal LM (:func:`decode_problem` is None for it).
        ids: (B, P) prompts, left-padded when their lengths differ.
        new_tokens: most tokens to generate per row.
        attention_mask: (B, P) 1 on prompt tokens, 0 on the left padding; None = no padding. Positions
            count from each row's first prompt token, as transformers' ``generate`` counts them.
        temperature: 0 = greedy (argmax); else sampling at that temperature, with `top_p`.
        top_p: nucleus filtering of the sampling (1 = off).
        stop_ids: a row is finished once it produced one of them; decoding ends when every row is.
        pad_id: what finished rows produce (and read) afterwards; None = the model's own ids.
        static_cache: True = transformers' ``StaticCache`` of P + `new_tokens` positions, allocated once;
            False = the model's dynamic cache; None = dynamic on the CPU (faster there), elsewhere static
            where the model allows one, else dynamic.
        compile_step: decode each new token with the model's one-token step compiled by
            ``torch.compile`` (the prefill stays eager), into a static cache of P + `new_tokens` positions
            rounded up to a multiple of :data:`CACHE_BUCKET`. Made once per model and reused by later
            calls (other prompt lengths and budgets within the cache, parameters updated in place), it
            serves the batch size of its first call; a batch of another size decodes as without it.
            The first call compiles (seconds to minutes); it pays on long runs. Overrides `static_cache`.
        times: when given, each step's seconds after the prefill are appended (CUDA synchronised).

    Returns:
        (new ids (B, <= new_tokens), prefill seconds).

    Raises:
        ModelError: `static_cache=True` or `compile_step=True` for a model that cannot take a static cache.
    """
    device, rows = ids.device, ids.shape[0]
    stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    mask = (
        torch.ones_like(ids) if attention_mask is None else attention_mask.to(device=device, dtype=torch.long)
    )
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    # The mask is only needed where there is padding (transformers' generate drops an all-ones mask too).
    padded = attention_mask is not None and not bool(mask.all())
    grown = _grown_mask(mask, new_tokens) if padded else None
    takes, name = _accepts(hf), _cache_argument(hf)
    # The arguments every step passes alike, built once; the cache object is updated in place by the model.
    fixed: dict[str, Any] = {"use_cache": True}
    if "logits_to_keep" in takes:
        fixed["logits_to_keep"] = 1
    compiled = _compiled_for(hf, rows, ids.shape[1] + new_tokens, device) if compile_step else None
    if compiled is not None:
        past, grown = compiled.cache, _grown_mask(mask, compiled.length - ids.shape[1])
    else:
        past = _choose_cache(hf, ids.shape[1] + new_tokens, static_cache, device)
    static = past is not None
    if static and grown is None:  # with a static cache the model builds a mask every step, padding or not
        grown = _grown_mask(mask, new_tokens)
    prepared = _prepared_mask(hf, grown) if grown is not None else None
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens: list[torch.Tensor] = []
    step_in, prefill, seen = ids, 0.0, ids.shape[1]
    every = _stop_check_every(device)
    for step in range(new_tokens):
        timed = step == 0 or times is not None  # the only steps that wait for the device
        if timed:
            _sync(device)
        start = time.perf_counter()
        kwargs = {name: past} if past is not None else {}
        if prepared is not None:
            # The rows of this step's queries; a static cache reads its whole length every step.
            rows_now = prepared[:, :, seen - step_in.shape[1] : seen]
            kwargs["attention_mask"] = rows_now if static else rows_now[..., :seen]
        elif grown is not None:
            kwargs["attention_mask"] = grown[:, :seen]  # what generate passes; the model pads it to the cache
        if attention_mask is not None or compiled is not None:
            kwargs["position_ids"] = position
        if compiled is not None and step > 0:
            # Fixed shapes: the mask's one row (a copy, not a view at an offset that changes) or all of it.
            step_mask = rows_now.contiguous() if prepared is not None else grown
            logits = _run_compiled(hf, step_in, position, step_mask, past, name, fixed)
        else:
            out = hf(input_ids=step_in, **kwargs, **fixed)
            logits, past = out.logits[:, -1], _cache_of(out)
        token = _next_token(logits, temperature, top_p)
        if pad_id is not None:
            token = torch.where(done, pad_id, token)
        if timed:
            _sync(device)
        if step == 0:
            prefill = time.perf_counter() - start
        elif times is not None:
            times.append(time.perf_counter() - start)
        tokens.append(token)
        done |= torch.isin(token, stop)
        if len(stop_ids) and (step + 1) % every == 0 and bool(done.all()):
            break
        step_in = token[:, None]
        position = position[:, -1:] + 1
        seen += 1
    new = torch.stack(tokens, dim=1)
    return (new[:, : _steps_until_all_stopped(new, stop)] if every > 1 and len(stop_ids) else new), prefill


def generation_latency(
    model: nn.Module,
    prompt_ids: torch.Tensor | Sequence[int],
    new_tokens: int = 32,
    *,
    warmup: int = 1,
    repeats: int = 3,
) -> GenerationLatency:
    """Time greedy decoding with the KV cache: median ms per new token after warm-up.

    Runs on the model's device (CUDA is synchronised around every step); the model is put in eval mode.
    Compare two models by timing them in one process, one after the other: absolute times depend on the
    machine's load, their ratio much less.

    Args:
        model: a :class:`~distil.models.hf.CausalLM` (or a bare ``transformers`` causal LM).
        prompt_ids: token ids (T,) or (B, T).
        new_tokens: tokens to generate per repeat (>= 2: the first comes from the prefill).
        warmup: untimed repeats first (allocations, kernel selection).
        repeats: timed repeats; the median is over all their decoding steps.

    Returns:
        GenerationLatency.

    Raises:
        ModelError: not a causal LM, an empty prompt, or fewer than 2 new tokens.
    """
    if new_tokens < 2 or repeats < 1 or warmup < 0:
        raise ModelError(
            f"need new_tokens >= 2, repeats >= 1, warmup >= 0; got {new_tokens}, {repeats}, {warmup}"
        )
    hf = _hf(model)
    model.eval()
    device = next(model.parameters()).device
    ids = _as_batch(prompt_ids, device)
    for _ in range(warmup):
        decode(hf, ids, new_tokens)
    steps: list[float] = []
    prefills = [decode(hf, ids, new_tokens, times=steps)[1] for _ in range(repeats)]
    return GenerationLatency(
        ms_per_token=statistics.median(steps) * 1e3,
        prefill_ms=statistics.median(prefills) * 1e3,
        prompt_tokens=int(ids.shape[1]),
        new_tokens=new_tokens,
        batch=int(ids.shape[0]),
        repeats=repeats,
        device=str(device),
    )


def greedy_ids(
    model: nn.Module,
    prompt_ids: torch.Tensor | Sequence[int],
    new_tokens: int,
    *,
    stop_ids: Sequence[int] = (),
) -> torch.Tensor:
    """The greedy continuation (B, new_tokens) of `prompt_ids` (T,) or (B, T), decoded with the KV cache.

    With `stop_ids` it may be shorter: decoding ends once every row has produced a stop id.
    """
    if new_tokens < 1:
        raise ModelError(f"new_tokens must be >= 1, got {new_tokens}")
    model.eval()
    ids = _as_batch(prompt_ids, next(model.parameters()).device)
    return decode(_hf(model), ids, new_tokens, stop_ids=stop_ids)[0]


def greedy_samples(model: nn.Module, tokenizer: Any, prompts: Sequence[str], n: int) -> list[str]:
    """The greedy continuation of each prompt, `n` tokens long (cut at the tokenizer's end of sequence).

    Args:
        model: a causal LM.
        tokenizer: a distil tokenizer (``encode``/``decode``/``eos_id``; e.g. ``get_tokenizer("byte")``).
        prompts: texts; an empty one starts from the tokenizer's BOS (or EOS) id.
        n: new tokens per prompt.

    Returns:
        One continuation text per prompt (without the prompt).
    """
    texts = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt) or [int(getattr(tokenizer, "bos_id", tokenizer.eos_id))]
        new = greedy_ids(model, ids, n)[0].tolist()
        if tokenizer.eos_id in new:
            new = new[: new.index(tokenizer.eos_id)]
        texts.append(tokenizer.decode(new))
    return texts


__all__ = [
    "GenerationLatency",
    "compile_step_problem",
    "decode",
    "decode_problem",
    "generation_latency",
    "greedy_ids",
    "greedy_samples",
]
