"""Width selection for Hugging Face transformer students: the part of parameter transfer that cannot be
traced.

A transformer's channels are coupled in ways a graph trace does not see through reshapes: the residual
stream (hidden size) is one group through the embeddings, every block and every norm, and attention
splits its projections into heads. So the selection is written out for the llama family (llama,
mistral, qwen2, ...: ``q/k/v/o_proj``, ``gate/up/down_proj``, RMS norms) and gpt2 (fused ``c_attn``,
``Conv1D`` weights stored (in, out), layer norms, position embeddings): one set of hidden units for the
whole model, and per teacher block a set of attention heads (whole heads, grouped-query groups kept
together) and of MLP units. :func:`~distil.transfer.parameters.transfer_parameters` calls
:func:`hf_width_donor` for a narrower HF student and copies the result by name, as for any model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distil.errors import TransferError
from distil.transfer.selection import select_indices

# Projection names inside one block, per family.
_LLAMA = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "up": ("mlp.gate_proj", "mlp.up_proj"),
    "down": "mlp.down_proj",
}
_GPT2 = {"qkv": "attn.c_attn", "o": "attn.c_proj", "up": ("mlp.c_fc",), "down": "mlp.c_proj"}


def _family(state: dict[str, torch.Tensor], block: str) -> str | None:
    if all(f"{block}.{_LLAMA[p]}.weight" in state for p in ("q", "k", "v", "o", "down")):
        return "llama"
    if f"{block}.{_GPT2['qkv']}.weight" in state and f"{block}.{_GPT2['down']}.weight" in state:
        return "gpt2"
    return None


def _mlp_size(cfg: Any) -> int:
    return int(
        getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * cfg.hidden_size
    )


def is_hf_model(model: nn.Module) -> bool:
    """Whether `model` wraps a ``transformers`` model (``.hf`` with a config)."""
    hf = getattr(model, "hf", None)
    return isinstance(hf, nn.Module) and hasattr(hf, "config")


def _blocks(model: nn.Module) -> list[str]:
    from distil.models.hf import block_names

    return block_names(model)


def _head_dim(cfg: Any) -> int:
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _kv_heads(cfg: Any) -> int:
    return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)


def _rows(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.tensor([h * head_dim + d for h in heads for d in range(head_dim)], dtype=torch.long)


def _l1_cols(w: torch.Tensor) -> torch.Tensor:
    return w.detach().double().abs().sum(0)


def hf_width_donor(
    teacher: nn.Module, student: nn.Module, selection: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The teacher's tensors cut to the student's widths, keyed by the teacher's names.

    Args:
        teacher: a wrapped llama-family or gpt2 HF model.
        student: the same model type, at most as wide (hidden size, MLP size, heads); its head size must
            be the teacher's (``derive_student_config`` keeps it).
        selection: "first", "uniform" or "l1" (largest L1 norm: for hidden units, the embedding column
            plus every block's writes to the residual stream; for MLP units and heads, their in- and
            out-projection weights).

    Returns:
        (state, notes): every teacher tensor, cut where a width differs, and per teacher module a note
        of what was selected.

    Raises:
        TransferError: another model type or family, a different head size, or a wider student.
    """
    t_hf: Any = teacher.hf
    tc: Any = t_hf.config
    sc: Any = getattr(student.hf, "config", None)
    if tc.model_type != sc.model_type:
        raise TransferError(
            f"the teacher is a {tc.model_type} and the student a {sc.model_type}: width selection maps tensors "
            "of one model type. Derive the student from the teacher's config (derive_student_config)."
        )
    state = teacher.state_dict()
    blocks = _blocks(teacher)
    family = _family(state, blocks[0])
    if family is None:
        raise TransferError(
            f"a narrower {tc.model_type} student cannot be initialised from its teacher yet: width selection knows "
            "the llama family (llama, mistral, qwen2: q/k/v/o_proj, gate/up/down_proj) and gpt2. Keep the "
            "teacher's widths (fewer layers still transfer), or use init: random."
        )
    hd_t, hd_s = _head_dim(tc), _head_dim(sc)
    if hd_t != hd_s:
        raise TransferError(
            f"the student's attention head size {hd_s} differs from the teacher's {hd_t}; whole heads are copied, "
            "so keep the head size (fewer heads for a narrower model: derive_student_config does this)."
        )
    heads_t, heads_s = int(tc.num_attention_heads), int(sc.num_attention_heads)
    kv_t, kv_s = _kv_heads(tc), _kv_heads(sc)
    rep_t, rep_s = heads_t // kv_t, heads_s // kv_s
    if kv_s > kv_t or rep_s > rep_t:
        raise TransferError(
            f"the student has {heads_s} heads in {kv_s} key/value groups but the teacher {heads_t} in {kv_t}: "
            "each student group must be one of the teacher's, with at most as many query heads."
        )
    h_t, h_s = int(tc.hidden_size), int(sc.hidden_size)
    i_t, i_s = _mlp_size(tc), _mlp_size(sc)
    l1 = selection == "l1"
    names = _LLAMA if family == "llama" else _GPT2
    # Linear weights are (out, in); gpt2's Conv1D weights are (in, out).
    out_dim, in_dim = (0, 1) if family == "llama" else (1, 0)

    def l1_out(name: str) -> torch.Tensor:  # per output unit of a projection
        w = state[name].detach().double().abs()
        return w.sum(in_dim)

    def l1_in(name: str) -> torch.Tensor:  # per input unit of a projection
        w = state[name].detach().double().abs()
        return w.sum(out_dim)

    # The residual stream: one choice for the whole model (the embedding and every block's writes to it).
    hidden_score = None
    if l1:
        hidden_score = _l1_cols(t_hf.get_input_embeddings().weight)
        for b in blocks:
            hidden_score = (
                hidden_score + l1_out(f"{b}.{names['o']}.weight") + l1_out(f"{b}.{names['down']}.weight")
            )
    hid = torch.tensor(select_indices(h_t, h_s, selection, hidden_score), dtype=torch.long)

    notes: dict[str, str] = {}
    cut: dict[str, dict[int, torch.Tensor]] = {}  # tensor name -> {dim: indices}
    hid_note = f"{selection} selection of {h_s}/{h_t} hidden units"
    for b in blocks:
        o, down = f"{b}.{names['o']}", f"{b}.{names['down']}"
        ups = [f"{b}.{n}" for n in names["up"]]
        kv_score = q_score = mlp_score = None
        if l1:
            head_in = l1_in(f"{o}.weight").view(heads_t, hd_t).sum(1)
            if family == "llama":
                k, v, q = (f"{b}.{names[p]}.weight" for p in "kvq")
                kv_score = (l1_out(k) + l1_out(v)).view(kv_t, hd_t).sum(1)
                q_score = l1_out(q).view(heads_t, hd_t).sum(1) + head_in
            else:  # fused q, k, v columns; one key/value head per query head
                kv_score = q_score = (
                    l1_out(f"{b}.{names['qkv']}.weight").view(3, heads_t, hd_t).sum((0, 2)) + head_in
                )
            mlp_score = sum(l1_out(f"{u}.weight") for u in ups) + l1_in(f"{down}.weight")
        groups = select_indices(kv_t, kv_s, selection, kv_score)
        q_heads = []
        for g in groups:
            local = q_score[g * rep_t : (g + 1) * rep_t] if q_score is not None else None
            q_heads += [g * rep_t + j for j in select_indices(rep_t, rep_s, selection, local)]
        q_units, kv_units = _rows(q_heads, hd_t), _rows(groups, hd_t)
        mlp = torch.tensor(select_indices(i_t, i_s, selection, mlp_score), dtype=torch.long)
        # (module, output units, input units) of every projection in the block.
        projections = [(o, hid, q_units), (down, hid, mlp), *((u, mlp, hid) for u in ups)]
        if family == "llama":
            projections += [
                (f"{b}.{names['q']}", q_units, hid),
                (f"{b}.{names['k']}", kv_units, hid),
                (f"{b}.{names['v']}", kv_units, hid),
            ]
            attention = [f"{b}.{names[p]}" for p in "qkvo"]
        else:
            qkv_units = torch.cat([q_units, h_t + q_units, 2 * h_t + q_units])
            projections.append((f"{b}.{names['qkv']}", qkv_units, hid))
            attention = [f"{b}.{names['qkv']}", o]
        for module, outs, ins in projections:
            cut[f"{module}.weight"] = {out_dim: outs, in_dim: ins}
            cut[f"{module}.bias"] = {0: outs}
        head_note = (
            f"{selection} selection of heads {q_heads} of {heads_t} (key/value groups {groups} of {kv_t})"
        )
        for module in attention:
            notes[module] = f"{head_note}; {hid_note}"
        for module in (down, *ups):
            notes[module] = f"{selection} selection of {i_s}/{i_t} MLP units; {hid_note}"
    for name, tensor in state.items():
        module = name.rsplit(".", 1)[0]
        if name in cut:
            continue
        if (
            tensor.dim() == 2
            and tensor.shape[1] == h_t
            and module.endswith(("embed_tokens", "lm_head", "wte", "wpe"))
        ):
            cut[name] = {1: hid}
            notes[module] = hid_note
        elif (
            tensor.dim() == 1
            and tensor.shape[0] == h_t
            and (module.endswith("norm") or module.rsplit(".", 1)[-1].startswith("ln_"))
            and not module.endswith(("q_norm", "k_norm"))
        ):
            cut[name] = {0: hid}
            notes[module] = hid_note
    donor: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        out = tensor.detach()
        for dim, idx in cut.get(name, {}).items():
            if out.dim() > dim:
                out = out.index_select(dim, idx.to(out.device))
        donor[name] = out
    return donor, notes
