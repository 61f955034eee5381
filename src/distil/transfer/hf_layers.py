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

from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Widths:
    """The teacher's (t) and the student's (s) widths; whole heads, so one head size."""

    head_dim: int
    heads_t: int
    heads_s: int
    kv_t: int
    kv_s: int
    hidden_t: int
    hidden_s: int
    mlp_t: int
    mlp_s: int

    @property
    def rep_t(self) -> int:  # query heads per key/value group
        return self.heads_t // self.kv_t

    @property
    def rep_s(self) -> int:
        return self.heads_s // self.kv_s


def _check_pair(tc: Any, sc: Any, state: dict[str, torch.Tensor], block: str) -> tuple[str, _Widths]:
    """The family of the pair and its widths, or an error saying why the student cannot take a cut.

    Raises:
        TransferError: another model type or family, a different head size, or a wider student.
    """
    if tc.model_type != sc.model_type:
        raise TransferError(
            f"the teacher is a {tc.model_type} and the student a {sc.model_type}: width selection maps tensors "
            "of one model type. Derive the student from the teacher's config (derive_student_config)."
        )
    family = _family(state, block)
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
    w = _Widths(
        head_dim=hd_t,
        heads_t=int(tc.num_attention_heads),
        heads_s=int(sc.num_attention_heads),
        kv_t=_kv_heads(tc),
        kv_s=_kv_heads(sc),
        hidden_t=int(tc.hidden_size),
        hidden_s=int(sc.hidden_size),
        mlp_t=_mlp_size(tc),
        mlp_s=_mlp_size(sc),
    )
    if w.kv_s > w.kv_t or w.rep_s > w.rep_t:
        raise TransferError(
            f"the student has {w.heads_s} heads in {w.kv_s} key/value groups but the teacher {w.heads_t} in "
            f"{w.kv_t}: each student group must be one of the teacher's, with at most as many query heads."
        )
    return family, w


class _Cutter:
    """Chooses the kept units of one teacher, block by block, and records every tensor's cut."""

    def __init__(self, state: dict[str, torch.Tensor], family: str, widths: _Widths, selection: str) -> None:
        self.state, self.family, self.w, self.selection = state, family, widths, selection
        self.names = _LLAMA if family == "llama" else _GPT2
        # Linear weights are (out, in); gpt2's Conv1D weights are (in, out).
        self.out_dim, self.in_dim = (0, 1) if family == "llama" else (1, 0)
        self.cut: dict[str, dict[int, torch.Tensor]] = {}  # tensor name -> {dim: indices}
        self.notes: dict[str, str] = {}

    def l1_out(self, name: str) -> torch.Tensor:
        """L1 norm per output unit of a projection."""
        return self.state[name].detach().double().abs().sum(self.in_dim)

    def l1_in(self, name: str) -> torch.Tensor:
        """L1 norm per input unit of a projection."""
        return self.state[name].detach().double().abs().sum(self.out_dim)

    def hidden(self, embedding: torch.Tensor, blocks: list[str]) -> torch.Tensor:
        """The residual stream's units: one choice for the whole model (the embedding and every block's
        writes to it)."""
        score = None
        if self.selection == "l1":
            score = _l1_cols(embedding)
            for b in blocks:
                score = (
                    score
                    + self.l1_out(f"{b}.{self.names['o']}.weight")
                    + self.l1_out(f"{b}.{self.names['down']}.weight")
                )
        w = self.w
        return torch.tensor(select_indices(w.hidden_t, w.hidden_s, self.selection, score), dtype=torch.long)

    def _head_scores(self, b: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """L1 scores of the key/value groups and of the query heads of block `b` (None: not l1)."""
        if self.selection != "l1":
            return None, None
        w, names = self.w, self.names
        head_in = self.l1_in(f"{b}.{names['o']}.weight").view(w.heads_t, w.head_dim).sum(1)
        if self.family == "llama":
            k, v, q = (f"{b}.{names[p]}.weight" for p in "kvq")
            kv_score = (self.l1_out(k) + self.l1_out(v)).view(w.kv_t, w.head_dim).sum(1)
            return kv_score, self.l1_out(q).view(w.heads_t, w.head_dim).sum(1) + head_in
        # fused q, k, v columns; one key/value head per query head
        qkv = self.l1_out(f"{b}.{names['qkv']}.weight").view(3, w.heads_t, w.head_dim).sum((0, 2)) + head_in
        return qkv, qkv

    def heads(self, b: str) -> tuple[list[int], list[int]]:
        """The kept key/value groups of block `b` and, inside each, its kept query heads."""
        w = self.w
        kv_score, q_score = self._head_scores(b)
        groups = select_indices(w.kv_t, w.kv_s, self.selection, kv_score)
        q_heads: list[int] = []
        for g in groups:
            local = q_score[g * w.rep_t : (g + 1) * w.rep_t] if q_score is not None else None
            q_heads += [g * w.rep_t + j for j in select_indices(w.rep_t, w.rep_s, self.selection, local)]
        return groups, q_heads

    def mlp(self, b: str) -> torch.Tensor:
        """The kept MLP units of block `b`."""
        ups, down = [f"{b}.{n}" for n in self.names["up"]], f"{b}.{self.names['down']}"
        score = None
        if self.selection == "l1":
            score = sum(self.l1_out(f"{u}.weight") for u in ups) + self.l1_in(f"{down}.weight")
        w = self.w
        return torch.tensor(select_indices(w.mlp_t, w.mlp_s, self.selection, score), dtype=torch.long)

    def block(self, b: str, hid: torch.Tensor, hid_note: str) -> None:
        """Record the cuts and notes of every projection of block `b`."""
        w, names = self.w, self.names
        o, down = f"{b}.{names['o']}", f"{b}.{names['down']}"
        ups = [f"{b}.{n}" for n in names["up"]]
        groups, q_heads = self.heads(b)
        q_units, kv_units = _rows(q_heads, w.head_dim), _rows(groups, w.head_dim)
        mlp = self.mlp(b)
        # (module, output units, input units) of every projection in the block.
        projections = [(o, hid, q_units), (down, hid, mlp), *((u, mlp, hid) for u in ups)]
        if self.family == "llama":
            projections += [
                (f"{b}.{names['q']}", q_units, hid),
                (f"{b}.{names['k']}", kv_units, hid),
                (f"{b}.{names['v']}", kv_units, hid),
            ]
            attention = [f"{b}.{names[p]}" for p in "qkvo"]
        else:
            h_t = w.hidden_t
            qkv_units = torch.cat([q_units, h_t + q_units, 2 * h_t + q_units])
            projections.append((f"{b}.{names['qkv']}", qkv_units, hid))
            attention = [f"{b}.{names['qkv']}", o]
        for module, outs, ins in projections:
            self.cut[f"{module}.weight"] = {self.out_dim: outs, self.in_dim: ins}
            self.cut[f"{module}.bias"] = {0: outs}
        sel = self.selection
        head_note = (
            f"{sel} selection of heads {q_heads} of {w.heads_t} (key/value groups {groups} of {w.kv_t})"
        )
        for module in attention:
            self.notes[module] = f"{head_note}; {hid_note}"
        for module in (down, *ups):
            self.notes[module] = f"{sel} selection of {w.mlp_s}/{w.mlp_t} MLP units; {hid_note}"

    def residual(self, hid: torch.Tensor, hid_note: str) -> None:
        """Record the cuts of the tensors outside the blocks' projections on the residual stream:
        embeddings, the output head and every norm."""
        h_t = self.w.hidden_t
        for name, tensor in self.state.items():
            module = name.rsplit(".", 1)[0]
            if name in self.cut:
                continue
            if (
                tensor.dim() == 2
                and tensor.shape[1] == h_t
                and module.endswith(("embed_tokens", "lm_head", "wte", "wpe"))
            ):
                self.cut[name] = {1: hid}
                self.notes[module] = hid_note
            elif (
                tensor.dim() == 1
                and tensor.shape[0] == h_t
                and (module.endswith("norm") or module.rsplit(".", 1)[-1].startswith("ln_"))
                and not module.endswith(("q_norm", "k_norm"))
            ):
                self.cut[name] = {0: hid}
                self.notes[module] = hid_note

    def donor(self) -> dict[str, torch.Tensor]:
        """Every teacher tensor, cut where recorded."""
        donor: dict[str, torch.Tensor] = {}
        for name, tensor in self.state.items():
            out = tensor.detach()
            for dim, idx in self.cut.get(name, {}).items():
                if out.dim() > dim:
                    out = out.index_select(dim, idx.to(out.device))
            donor[name] = out
        return donor


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
    state = teacher.state_dict()
    blocks = _blocks(teacher)
    family, widths = _check_pair(t_hf.config, getattr(student.hf, "config", None), state, blocks[0])
    cutter = _Cutter(state, family, widths, selection)
    hid = cutter.hidden(t_hf.get_input_embeddings().weight, blocks)
    hid_note = f"{selection} selection of {widths.hidden_s}/{widths.hidden_t} hidden units"
    for b in blocks:
        cutter.block(b, hid, hid_note)
    cutter.residual(hid, hid_note)
    return cutter.donor(), cutter.notes
