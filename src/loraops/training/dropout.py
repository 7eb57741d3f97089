"""LoRA dropout that keeps a one-byte mask for backward instead of a four-byte copy of the input.

PEFT computes ``lora_B(lora_A(dropout(x)))``: autograd keeps ``dropout(x)``, a float copy of every LoRA
layer's input, to compute ``lora_A``'s weight gradient. With ``all-linear`` targets that is seven such copies
per decoder layer, the largest share of what LoRA training holds beyond the frozen model's own activations
(bench/profile_memory.py: on SmolLM2-135M at batch 8 x 128, about 0.7 GB of float32 kept for backward).
The base layer already keeps ``x`` itself, so :class:`MaskedDropoutLinear` keeps ``x`` (the same tensor,
no new memory) and the boolean mask, and recomputes the dropped input in backward.

The mask is drawn as ``torch.nn.functional.dropout`` draws it on the CPU (a Bernoulli fill of a tensor shaped
and typed like ``x``), so there the same seed gives the same masks, losses and gradients as PEFT's own dropout
(tests/model/test_memory.py). On CUDA, where dropout has a fused kernel of its own, the masks follow the same
distribution but not the same random stream. In eval mode, or with ``p == 0``, the layer is a plain linear map.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _DroppedLinear(torch.autograd.Function):
    """``linear(x * mask / (1 - p), weight)``, saving ``x``, the bool mask and ``weight``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        mask = torch.empty_like(x).bernoulli_(1 - p).bool()  # as F.dropout draws it: same RNG use, same mask
        # F.dropout multiplies by 1 / (1 - p) rounded to x's dtype: the same factor gives the same values.
        scale = torch.tensor(1.0, dtype=x.dtype).div_(1 - p).item()
        ctx.save_for_backward(x, mask, weight)
        ctx.scale = scale
        return nn.functional.linear(torch.mul(x, mask).mul_(scale), weight)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, Any, None]:
        x, mask, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out @ weight).mul_(mask).mul_(ctx.scale)
        if ctx.needs_input_grad[1]:
            dropped = torch.mul(x, mask).mul_(ctx.scale)
            grad_w = grad_out.reshape(-1, grad_out.shape[-1]).t() @ dropped.reshape(-1, dropped.shape[-1])
        return grad_x, grad_w, None


class MaskedDropoutLinear(nn.Module):
    """A LoRA ``A`` matrix with its dropout folded in: the same ``weight`` parameter (so the state dict, the
    saved adapter and merging are unchanged), dropout ``p`` applied in training mode only."""

    def __init__(self, linear: nn.Linear, p: float):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("LoRA A matrices have no bias")
        self.weight = linear.weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            return _DroppedLinear.apply(x, self.weight, self.p)
        return nn.functional.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, p={self.p}"


def fold_lora_dropout(model: nn.Module) -> int:
    """Replace every plain LoRA layer's ``dropout`` + ``lora_A`` pair (PEFT modules ``lora_dropout[name]``
    and ``lora_A[name]``) by an identity and a :class:`MaskedDropoutLinear`; return how many were folded.
    Variants (DoRA and others, which use the dropped input themselves) and layers whose ``A`` is not a
    ``Linear`` keep PEFT's own modules."""
    folded = 0
    for module in model.modules():
        dropouts, lora_a = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not isinstance(dropouts, nn.ModuleDict) or not isinstance(lora_a, nn.ModuleDict):
            continue
        variants = getattr(module, "lora_variant", {}) or {}
        for name, dropout in list(dropouts.items()):
            a = lora_a[name] if name in lora_a else None
            if (name in variants or not isinstance(dropout, nn.Dropout) or dropout.p <= 0
                    or type(a) is not nn.Linear):
                continue
            lora_a[name] = MaskedDropoutLinear(a, dropout.p)
            dropouts[name] = nn.Identity()
            folded += 1
    return folded
