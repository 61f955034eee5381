"""A small Vision Transformer for image students, with DeiT's optional distillation token.

``vit-tiny`` patchifies the image with a strided convolution, prepends a class token (and, with
``distill_token=True``, a distillation token, Touvron et al. 2021), adds learned position embeddings and
runs pre-norm transformer blocks built from :class:`torch.nn.MultiheadAttention`, so hooks can capture any
block by module path (``blocks.0``, ...) and ONNX export needs nothing special.

The output contract keeps every other part of distil a plain classifier's user:

* without the token, ``forward`` returns (B, K) logits from the class token;
* with the token, in **eval** mode (measurement, teachers, export) ``forward`` returns the average of the
  class head's and the distillation head's logits, (B, K), as DeiT does at test time;
* with the token, in **training** mode ``forward`` returns :class:`TokenLogits` (both heads' logits), which
  distil's losses unwrap: every term sees the averaged (B, K) logits as ``student_logits`` and the ``deit``
  terms read the two heads (``distil.losses.deit``).

Parameter counts with the defaults (dim 64, depth 3, 4 heads, mlp ratio 2, patch 4) and 10 classes
(measured in tests/models/test_vit.py), next to SmallNet:

============  ==========  ====================  ==========
input         vit-tiny    vit-tiny + distill    smallnet
============  ==========  ====================  ==========
28x28x1       105,546     106,324               105,866
32x32x3       108,554     109,332               136,874
============  ==========  ====================  ==========
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distil.errors import ModelError
from distil.models.registry import register_model


@dataclass(frozen=True)
class TokenLogits:
    """The training-mode output of a student with a distillation token: both heads' logits.

    A dataclass, not a tuple, so that no code taking ``output[0]`` of a tuple silently reads one head.

    Attributes:
        cls: (B, K) logits of the class-token head (trained on the labels).
        dist: (B, K) logits of the distillation-token head (trained on the teacher).
    """

    cls: torch.Tensor
    dist: torch.Tensor

    @property
    def logits(self) -> torch.Tensor:
        """(B, K): the two heads averaged, what the model returns in eval mode."""
        return (self.cls + self.dist) / 2


def plain_logits(output: Any) -> Any:
    """The (B, K) logits of a model output: averaged heads for :class:`TokenLogits`, else `output` itself."""
    return output.logits if isinstance(output, TokenLogits) else output


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"vit-tiny: {name} must be a positive integer, got {value!r}.")


class VisionTransformer(nn.Module):
    """ViT classifier (class token, learned positions, pre-norm blocks), optionally with DeiT's
    distillation token and head.

    Args:
        num_classes: Number of output logits.
        in_channels: Input channels.
        image_size: Input height (= width); a multiple of `patch_size`.
        patch_size: Side of the square patches (the patch embedding's kernel and stride).
        dim: Token width; a multiple of `heads`.
        depth: Number of transformer blocks.
        heads: Attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of `dim`.
        dropout: Dropout in attention, MLP and after the position embedding.
        distill_token: Add DeiT's distillation token and its head (see the module docstring for the output).

    Raises:
        ModelError: If a size is not a positive integer, the image is not a multiple of the patch, `dim` is
            not a multiple of `heads`, or `mlp_ratio`/`dropout` are out of range.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        *,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        distill_token: bool = False,
    ) -> None:
        super().__init__()
        _check_sizes(image_size, patch_size, dim, depth, heads, mlp_ratio, dropout)
        side = image_size // patch_size
        self.distill_token = bool(distill_token)
        self.num_prefix = 2 if self.distill_token else 1
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if self.distill_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side + self.num_prefix, dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes) if self.distill_token else None
        self._init_weights()

    def _init_weights(self) -> None:
        # ViT's initialisation (timm): truncated normal 0.02 for tokens, positions and linear layers.
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N + prefix, D) normalised tokens after the last block."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        tokens = torch.cat([*prefix, patches], dim=1) + self.pos_embed
        return self.norm(self.blocks(self.pos_drop(tokens)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | TokenLogits:
        """(B, K) logits; :class:`TokenLogits` in training mode with the distillation token."""
        tokens = self.tokens(x)
        cls = self.head(tokens[:, 0])
        if self.head_dist is None:
            return cls
        heads = TokenLogits(cls=cls, dist=self.head_dist(tokens[:, 1]))
        return heads if self.training else heads.logits


def _check_sizes(
    image_size: int, patch_size: int, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float
) -> None:
    for name, value in (("patch_size", patch_size), ("dim", dim), ("depth", depth), ("heads", heads)):
        _check_positive_int(name, value)
    if image_size % patch_size:
        raise ModelError(
            f"vit-tiny: image_size={image_size} is not a multiple of patch_size={patch_size}, so the patches "
            f"would not tile the image. Fix: pick a patch size that divides {image_size} (e.g. "
            f"{', '.join(str(p) for p in range(2, 9) if image_size % p == 0) or '1'})."
        )
    if dim % heads:
        raise ModelError(
            f"vit-tiny: dim={dim} must be a multiple of heads={heads} (each head gets dim/heads)."
        )
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ModelError(f"vit-tiny: mlp_ratio must be a positive number, got {mlp_ratio!r}.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ModelError(f"vit-tiny: dropout must be in [0, 1), got {dropout!r}.")


@register_model("vit-tiny")
def vit_tiny(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    patch_size: int = 4,
    dim: int = 64,
    depth: int = 3,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
    distill_token: bool = False,
) -> VisionTransformer:
    """A small :class:`VisionTransformer` (about SmallNet's size by default); ``distill_token`` for DeiT."""
    return VisionTransformer(
        num_classes,
        in_channels,
        image_size,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=mlp_ratio,
        dropout=dropout,
        distill_token=distill_token,
    )
