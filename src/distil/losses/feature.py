"""Feature terms on captured (student, teacher) pairs: FitNets hints, attention transfer, and per-token
hidden-state distillation of transformer blocks (`hidden_mse`, `hidden_cosine`)."""

from __future__ import annotations

import torch
from torch import nn

from distil.errors import ConfigError
from distil.features import check_shapes, make_adapter, make_regressor
from distil.losses.functional import attention_transfer, fitnet_hint, hidden_state_loss
from distil.losses.registry import Term, TermContext, TermInputs, register_loss


def select_pairs(ctx: TermContext, pairs: list[int] | None, default: str, term: str) -> list[int]:
    """Indices of the feature pairs a term uses: `pairs` when given, else all pairs or the last one.

    Raises:
        ConfigError: an index is out of range, or there are no pairs.
    """
    n = len(ctx.pairs)
    if n == 0:
        raise ConfigError(
            f"loss term {term!r} needs feature pairs, but none were found; set kd.feature_pairs to "
            "[[student_path, teacher_path], ...] (`distil layers STUDENT --teacher TEACHER` proposes them)."
        )
    if pairs is None:
        return list(range(n)) if default == "all" else [n - 1]
    bad = [i for i in pairs if not -n <= i < n]
    if bad:
        raise ConfigError(f"loss term {term!r}: pair indices {bad} out of range for {n} feature pair(s)")
    return [i % n for i in pairs]


@register_loss("fitnet")
class FitNetTerm(Term):
    """FitNets hints: MSE(regressor(student feature), teacher feature), averaged over the selected pairs.

    As in the paper, every pair gets a trainable regressor (`distil.features.make_regressor`: 1x1 conv +
    BatchNorm + ReLU), also when the shapes already match. `kd.adapters: false` drops it (hints on the
    raw student feature, which then needs the teacher's shape) - not the published recipe.

    Options:
        pairs: indices into kd.feature_pairs (default: all).
    """

    needs_features = True

    def __init__(self, ctx: TermContext, pairs: list[int] | None = None) -> None:
        super().__init__()
        self.indices = select_pairs(ctx, pairs, "all", "fitnet")
        adapters = []
        for i in self.indices:
            s, t = ctx.student_shapes[i], ctx.teacher_shapes[i]
            if ctx.adapters:
                adapters.append(make_regressor(s, t))
            else:
                check_shapes(s, t, ctx.pairs[i])
                adapters.append(nn.Identity())
        self.adapters = nn.ModuleList(adapters)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        losses = [
            fitnet_hint(adapter(inputs.student_features[i]), inputs.teacher_features[i])
            for i, adapter in zip(self.indices, self.adapters, strict=True)
        ]
        return torch.stack(losses).mean()


@register_loss("at")
class AttentionTerm(Term):
    """Attention transfer, summed over the selected pairs of (B, C, H, W) maps (channels may differ).

    Options:
        p: exponent of the attention map (2 in the paper).
        pairs: indices into kd.feature_pairs (default: every pair of 4-D maps).
    """

    needs_features = True

    def __init__(self, ctx: TermContext, p: float = 2.0, pairs: list[int] | None = None) -> None:
        super().__init__()
        self.p = p
        chosen = select_pairs(ctx, pairs, "all", "at")
        if pairs is None:
            chosen = [i for i in chosen if len(ctx.student_shapes[i]) == 3]
        for i in chosen:
            s, t = ctx.student_shapes[i], ctx.teacher_shapes[i]
            if len(s) != 3 or len(t) != 3 or s[1:] != t[1:]:
                raise ConfigError(
                    f"attention transfer needs feature maps of equal spatial size; pair {ctx.pairs[i]} has "
                    f"student shape {s} and teacher shape {t}."
                )
        if not chosen:
            raise ConfigError(
                "attention transfer found no pair of (C, H, W) feature maps in kd.feature_pairs"
            )
        self.indices = chosen

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return torch.stack(
            [
                attention_transfer(inputs.student_features[i], inputs.teacher_features[i], self.p)
                for i in self.indices
            ]
        ).sum()


@register_loss("hidden_mse")
class HiddenMSETerm(Term):
    """Hidden states of transformer blocks, per token: MSE(projection(h_s), h_t) over the valid positions,
    averaged over the mapped blocks (TinyBERT's hidden-state loss).

    A trainable linear projection (D_s -> D_t, `distil.features.make_adapter`) maps the student's width
    onto the teacher's where they differ; it is part of the loss module, which the training loop's
    optimizer trains with the student. Features are the blocks' outputs (a block returning a tuple gives
    its first element, the hidden states). The batch mask applies to every position.

    Options:
        layer_map: {student_block: teacher_block} block indices (negative from the end), or "auto"
            (every student block to the teacher block at the same relative depth). `build_loss` resolves
            it into feature pairs of the block stacks (`distil.features.block_pairs`); None (the default)
            uses explicit kd.feature_pairs when given, else "auto".
        pairs: indices into the feature pairs (set by `build_loss` from layer_map; default all pairs of
            per-token or per-sample vectors).
    """

    needs_features = True
    uses_mask = True
    maps_blocks: bool = True
    distance = "mse"

    def __init__(
        self,
        ctx: TermContext,
        layer_map: dict[int, int] | str | None = None,
        pairs: list[int] | None = None,
    ) -> None:
        super().__init__()
        del layer_map  # resolved into ctx.pairs and `pairs` by build_loss
        name = f"hidden_{self.distance}"
        chosen = select_pairs(ctx, pairs, "all", name)
        if pairs is None:
            chosen = [i for i in chosen if len(ctx.student_shapes[i]) in (1, 2)]
        adapters = []
        for i in chosen:
            s, t = ctx.student_shapes[i], ctx.teacher_shapes[i]
            if len(s) not in (1, 2) or len(t) != len(s) or s[:-1] != t[:-1]:
                raise ConfigError(
                    f"{name} compares hidden states (T, D) per token; pair {ctx.pairs[i]} has student shape {s} "
                    f"and teacher shape {t}. Map transformer blocks (layer_map) or pick such layers."
                )
            if ctx.adapters:
                adapters.append(make_adapter(s, t))
            else:
                check_shapes(s, t, ctx.pairs[i])
                adapters.append(nn.Identity())
        if not chosen:
            raise ConfigError(f"{name} found no pair of per-token hidden states in the feature pairs")
        self.indices = chosen
        self.adapters = nn.ModuleList(adapters)

    def forward(self, inputs: TermInputs) -> torch.Tensor:
        return torch.stack(
            [
                hidden_state_loss(
                    adapter(inputs.student_features[i]),
                    inputs.teacher_features[i],
                    inputs.mask,
                    self.distance,
                )
                for i, adapter in zip(self.indices, self.adapters, strict=True)
            ]
        ).mean()


@register_loss("hidden_cosine")
class HiddenCosineTerm(HiddenMSETerm):
    """Hidden states of transformer blocks, per token: 1 - cos(projection(h_s), h_t) over the valid
    positions, averaged over the mapped blocks (DistilBERT's cosine loss). Options as `hidden_mse`."""

    distance = "cosine"
