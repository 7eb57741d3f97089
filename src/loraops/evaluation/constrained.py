"""Decoding constrained to the label set: every answer to a label task is exactly one label.

The labels are tokenised as they appear after the assistant's turn starts, each followed by the eos token
(``completion = label + eos``, tokenised on its own, as training and :func:`answer_nll` do), and kept in a
prefix tree. transformers calls ``prefix_allowed_tokens_fn(row, sequence)`` at each step with the whole
sequence of that row (left padding included); the tokens generated so far are those past the batch's input
width, so the tree is walked from there and only the tokens that continue some label are allowed. A model
that would babble can still only pick among the labels; which one it picks is still its greedy choice.
"""

from __future__ import annotations

from typing import Any, Callable


class LabelConstraint:
    """A prefix tree of the labels' token sequences (each ending in the eos token)."""

    def __init__(self, tokenizer: Any, labels: list[str]):
        if not labels:
            raise ValueError("a label constraint needs at least one label")
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token: a constrained answer could never end")
        self.eos_token_id = eos
        self.sequences = {label: tokenizer(f"{label}{tokenizer.eos_token}", add_special_tokens=False)["input_ids"]
                          for label in dict.fromkeys(labels)}
        self.tree: dict[int, dict] = {}
        for label, ids in self.sequences.items():
            if not ids or ids[-1] != eos:
                raise ValueError(f"label {label!r} does not tokenise to a sequence ending in the eos token")
            node = self.tree
            for token in ids:
                node = node.setdefault(token, {})

    @property
    def longest(self) -> int:
        """Tokens in the longest label (eos included): the fewest new tokens that let every label finish."""
        return max(len(ids) for ids in self.sequences.values())

    def allowed(self, generated: list[int]) -> list[int]:
        """Tokens that may follow ``generated`` (the answer's tokens so far). After a finished label (or off
        the tree, which greedy decoding under this constraint never reaches) only eos: generate pads a
        finished row anyway, and an empty list would leave no token to pick."""
        node = self.tree
        for token in generated:
            if token == self.eos_token_id or token not in node:
                return [self.eos_token_id]
            node = node[token]
        return list(node) or [self.eos_token_id]


def row_constraints(tokenizer: Any, labels: list[str] | list[list[str]] | None,
                    rows: int) -> list[LabelConstraint] | None:
    """One constraint per row: ``labels`` is one label list for every row or a list per row (rows with the
    same labels share one tree); None without labels."""
    if not labels:
        return None
    per_row = labels if isinstance(labels[0], (list, tuple)) else [labels] * rows
    if len(per_row) != rows:
        raise ValueError(f"{len(per_row)} label lists for {rows} prompts")
    built: dict[tuple[str, ...], LabelConstraint] = {}
    for row_labels in per_row:
        if tuple(row_labels) not in built:
            built[tuple(row_labels)] = LabelConstraint(tokenizer, list(row_labels))
    return [built[tuple(row_labels)] for row_labels in per_row]


def batch_prefix_fn(constraints: list[LabelConstraint], input_width: int) -> Callable[[int, Any], list[int]]:
    """The ``prefix_allowed_tokens_fn`` for one batch (left-padded inputs ``input_width`` wide): row ``i`` walks
    ``constraints[i]``."""

    def allowed_tokens(row: int, sequence: Any) -> list[int]:
        return constraints[row].allowed(sequence[input_width:].tolist())

    return allowed_tokens
