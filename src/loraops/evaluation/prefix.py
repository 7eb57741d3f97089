"""The tokens every prompt of a call begins with, run through the model once and reused by every batch.

The base model's few-shot prompts repeat one long beginning (system prompt, label list, the shot turns) and
differ only in the last user turn; computing that beginning for every prompt was most of the base model's
evaluation time. :class:`SharedPrefix` takes the longest common token prefix of the call's (already
tokenised) prompts, so each prompt's tokens are exactly those of the uncached computation, only split in
two: the prefix's key/value cache is computed once (batch of one), and each batch runs only its rows'
suffixes on a copy of it.

The layout of a batch keeps every real token at the position it has in its own unpadded prompt: the
attention mask is ``[prefix ones][pad zeros][suffix ones]`` (the suffixes left-padded after the prefix, so
generation continues every row from the same column) and generate derives position ids from the mask's
cumulative sum, so suffix token ``j`` sits at ``prefix + j`` whatever the padding. Padding tokens are masked
out as keys. The prefix stops one token short of the shortest prompt, so every row feeds at least one token.
"""

from __future__ import annotations

import copy
from typing import Any


def common_prefix_length(token_lists: list[list[int]]) -> int:
    """Tokens all of ``token_lists`` begin with, at most one fewer than the shortest has (each row keeps a
    token of its own to feed the model)."""
    if not token_lists:
        return 0
    first = token_lists[0]
    length = min(len(ids) for ids in token_lists) - 1
    for ids in token_lists[1:]:
        n = 0
        while n < length and ids[n] == first[n]:
            n += 1
        length = n
        if not length:
            break
    return max(length, 0)


class SharedPrefix:
    """The key/value cache of ``ids`` (the common prefix) on ``model``, and batches laid out to follow it."""

    def __init__(self, model: Any, ids: list[int], device: Any):
        import torch

        self.ids = list(ids)
        self.device = device
        prefix = torch.tensor([self.ids], dtype=torch.long, device=device)
        with torch.inference_mode():
            out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True)
        self._cache = out.past_key_values
        if self._cache is None:
            raise ValueError("the model returned no key/value cache for the shared prefix")

    @classmethod
    def of(cls, model: Any, token_lists: list[list[int]], device: Any) -> SharedPrefix | None:
        """The shared prefix of ``token_lists``, or None when they share no token."""
        length = common_prefix_length(token_lists)
        return cls(model, token_lists[0][:length], device) if length else None

    def __len__(self) -> int:
        return len(self.ids)

    def cache(self, rows: int) -> Any:
        """A fresh copy of the prefix cache for a batch of ``rows``: generate and forward append to the cache
        they are given, so the kept one is never handed out."""
        import torch

        with torch.inference_mode():
            cache = copy.deepcopy(self._cache)
            if rows > 1:
                cache.batch_repeat_interleave(rows)
        return cache

    def generation_batch(self, token_lists: list[list[int]], pad_token_id: int) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` for generate: the prefix, then each suffix left-padded to the
        batch's longest (mask ``[prefix ones][pad zeros][suffix ones]``), with the prefix cache for the rows.
        The sequences are the full prompts (as generate expects with a cache), so the new tokens start at
        ``input_ids.shape[1]`` as without the cache."""
        import torch

        suffixes = [self._suffix(ids) for ids in token_lists]
        width = max(len(s) for s in suffixes)
        n = len(self.ids)
        ids = torch.full((len(suffixes), n + width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(suffixes), n + width), dtype=torch.long)
        ids[:, :n] = torch.tensor(self.ids)
        mask[:, :n] = 1
        for row, suffix in enumerate(suffixes):
            ids[row, n + width - len(suffix):] = torch.tensor(suffix)
            mask[row, n + width - len(suffix):] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                "past_key_values": self.cache(len(suffixes))}

    def _suffix(self, ids: list[int]) -> list[int]:
        if len(ids) <= len(self.ids) or ids[:len(self.ids)] != self.ids:
            raise ValueError("a prompt does not continue the shared prefix")
        return ids[len(self.ids):]

    def forward_inputs(self, ids: Any, mask: Any) -> dict[str, Any]:
        """Inputs for one forward over right-padded suffixes ``ids`` (``mask`` their padding mask): the
        prefix's ones before the mask, the positions right after the prefix's, the prefix cache."""
        import torch

        rows, width = ids.shape
        n = len(self.ids)
        positions = torch.arange(n, n + width, dtype=torch.long).unsqueeze(0).expand(rows, -1)
        return {"input_ids": ids.to(self.device),
                "attention_mask": torch.cat([torch.ones((rows, n), dtype=mask.dtype), mask], dim=1).to(self.device),
                "position_ids": positions.to(self.device), "past_key_values": self.cache(rows)}
