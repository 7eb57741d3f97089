"""Each row of a batch answered by its own LoRA adapter, all adapters loaded on one PEFT model.

PEFT's per-row path (``adapter_names=``) loops over the batch's adapters inside every LoRA layer: a gather of
the adapter's rows, its two small products and an ``index_add`` per adapter and layer, hundreds of small ops
per forward pass. :class:`RowRouter` computes the same sums with a fixed number of ops per layer whatever
the mix: per LoRA layer, the served adapters' ``A`` and ``B`` are stacked (zero-padded to the largest rank,
the scaling folded into ``B``; an adapter that does not target the layer is all zeros there) and a batch
adds ``bmm(bmm(x, A[slot]), B[slot])`` (each row's own matrices, gathered) to the base layer's output.

How, with no PEFT internals changed: while a batch is routed, every LoRA layer runs as its base layer
(PEFT's own "adapters disabled" flag) and a forward hook adds the stacked delta for the row -> adapter
index set for that batch. The index is fixed per batch, so ``generate`` and its key/value cache work as
they do for one adapter. A batch whose rows all use one adapter skips the gather and runs that adapter's
own (unpadded) matrices.

PEFT's path stays the fallback for what the stacked sums do not reproduce, decided per adapter when the
stacks are built (the model's set of adapters changed): DoRA and other LoRA variants, LoRA on anything but
a ``Linear`` (embeddings, convolutions), a bias on ``lora_B``, merged layers. Training mode (dropout
active) falls back per call. A batch with any fallback adapter goes through PEFT's path as a whole.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

BASE_ROW = "__base__"  # PEFT's name for a row answered by the base model alone
_ROUTER_ATTR = "_loraops_row_router"


class _LayerStack:
    """One LoRA layer's stacked adapters: ``a`` [slots, in, R], ``b`` [slots, R, out] (scaling in ``b``);
    ``own[slot]`` that adapter's unpadded views, ``None`` where it does not target this layer."""

    def __init__(self, a: Any, b: Any, own: list[tuple[Any, Any] | None]):
        self.a, self.b, self.own = a, b, own


class _Route:
    """The batch being routed: each row's slot (a tensor) and, when all rows share one, that slot."""

    def __init__(self, index: Any, single: int | None):
        self.index, self.single, self.rows = index, single, int(index.shape[0])


def _unsupported(model: Any, name: str) -> str | None:
    """Why adapter ``name`` cannot be stacked (``None``: it can)."""
    from peft.tuners.lora import layer as lora

    config = model.peft_config.get(name)
    if config is None:
        return "not loaded"
    if str(getattr(config, "peft_type", "")) not in ("LORA", "PeftType.LORA"):
        return f"a {config.peft_type} adapter, not LoRA"
    for module_name, module in model.named_modules():
        if not isinstance(module, lora.LoraLayer) or not _holds(module, name):
            continue
        if type(module) is not lora.Linear:
            return f"LoRA on a {type(module).__name__} layer ({module_name})"
        if name in getattr(module, "lora_variant", {}) or module.use_dora.get(name, False):
            return f"DoRA or another LoRA variant ({module_name})"
        if module.lora_B[name].bias is not None:
            return f"a bias on lora_B ({module_name})"
        if module.merged:
            return f"merged into the base weights ({module_name})"
    return None


def _holds(module: Any, name: str) -> bool:
    return any(name in getattr(module, attr, {}) for attr in
               ("lora_A", "lora_embedding_A", "lora_magnitude_vector"))


class RowRouter:
    """``row_router(model).generate(["a", "b", "a"], input_ids=..., attention_mask=...)``: row ``i`` answered
    by adapter ``adapter_names[i]`` (or :data:`BASE_ROW`), through the stacked sums when every named adapter
    is stackable, else through PEFT's ``adapter_names`` path. Get it with :func:`row_router`, which
    rebuilds the stacks whenever the model's adapters changed."""

    def __init__(self, model: Any):
        self.model = model
        self.signature: tuple[Any, ...] | None = None
        self.slots: dict[str, int] = {}  # stacked adapter -> its slot; the last slot is all zeros (BASE_ROW)
        self.fallback: dict[str, str] = {}  # adapter -> why it goes through PEFT's path
        self._tuner_layers: list[Any] = []
        self._handles: list[Any] = []
        self._route: _Route | None = None
        self._lock = threading.Lock()  # one routed batch at a time: the route is the router's state
        self.rebuild()

    # --- building ----------------------------------------------------------------------------------------

    def current_signature(self) -> tuple[Any, ...]:
        # load_adapter makes a new config object: a name reloaded with other weights is a change too
        return tuple((name, id(config)) for name, config in self.model.peft_config.items())

    def rebuild(self) -> None:
        """Stack the model's stackable adapters again (after an adapter was loaded or deleted)."""
        import torch
        from peft.tuners.lora import layer as lora
        from peft.tuners.tuners_utils import BaseTunerLayer

        for handle in self._handles:
            handle.remove()
        self._handles = []
        names = list(self.model.peft_config)
        self.fallback = {}
        for name in names:
            why = _unsupported(self.model, name)
            if why is not None:
                self.fallback[name] = why
        stacked = [name for name in names if name not in self.fallback]
        self.slots = {name: slot for slot, name in enumerate(stacked)}
        self._tuner_layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        with torch.no_grad():
            for module in self.model.modules():
                if type(module) is not lora.Linear:
                    continue
                here = [name for name in stacked if name in module.lora_A]
                if not here:
                    continue
                stack = self._stack(module, stacked)
                self._handles.append(module.register_forward_hook(partial(self._add_delta, stack)))
        self.signature = self.current_signature()

    @staticmethod
    def _stack(module: Any, stacked: list[str]) -> _LayerStack:
        import torch

        in_features, out_features = module.in_features, module.out_features
        present = [name for name in stacked if name in module.lora_A]
        dtype = module.lora_A[present[0]].weight.dtype
        device = module.lora_A[present[0]].weight.device
        rank = max(module.lora_A[name].weight.shape[0] for name in present)
        a = torch.zeros(len(stacked) + 1, in_features, rank, dtype=dtype, device=device)
        b = torch.zeros(len(stacked) + 1, rank, out_features, dtype=dtype, device=device)
        own: list[tuple[Any, Any] | None] = [None] * (len(stacked) + 1)
        for slot, name in enumerate(stacked):
            if name not in module.lora_A:
                continue
            weight_a, weight_b = module.lora_A[name].weight, module.lora_B[name].weight  # [r, in], [out, r]
            r = weight_a.shape[0]
            a[slot, :, :r] = weight_a.t().to(dtype)
            b[slot, :r, :] = (weight_b.t() * module.scaling[name]).to(dtype)
            own[slot] = (a[slot, :, :r], b[slot, :r, :])
        return _LayerStack(a, b, own)

    def _add_delta(self, stack: _LayerStack, module: Any, args: tuple[Any, ...], output: Any) -> Any:
        import torch

        route = self._route
        if route is None:  # not a routed batch: the layer ran as PEFT runs it
            return None
        x = args[0]
        if x.shape[0] != route.rows:
            raise RuntimeError(f"a routed batch has {route.rows} rows but a LoRA layer got {x.shape[0]} "
                               "(beam search or another row expansion cannot be routed per row)")
        xs = x.to(stack.a.dtype)
        if route.single is not None:
            own = stack.own[route.single]
            if own is None:  # this adapter does not target this layer
                return None
            delta = (xs @ own[0]) @ own[1]
        else:
            flat = xs.reshape(route.rows, -1, xs.shape[-1])
            delta = torch.bmm(torch.bmm(flat, stack.a[route.index]), stack.b[route.index])
            delta = delta.reshape(*x.shape[:-1], delta.shape[-1])
        return output.add_(delta.to(output.dtype))  # the base output is this layer's own fresh tensor

    # --- routing -----------------------------------------------------------------------------------------

    def path(self, adapter_names: list[str]) -> str:
        """``"stacked"`` or ``"peft"``: which path a batch with these rows takes."""
        if self.model.training:  # dropout active: PEFT's path applies it
            return "peft"
        known = set(self.slots) | {BASE_ROW}
        return "stacked" if all(name in known for name in adapter_names) else "peft"

    @contextmanager
    def routed(self, adapter_names: list[str]) -> Iterator[dict[str, Any]]:
        """Inside: call the model with the yielded keyword arguments added (none on the stacked path,
        ``adapter_names`` on PEFT's); rows are routed as ``adapter_names`` says."""
        import torch

        if self.signature != self.current_signature():
            self.rebuild()
        names = list(adapter_names)
        if self.path(names) == "peft":
            yield {"adapter_names": names}
            return
        zero = len(self.slots)
        slots = [self.slots.get(name, zero) for name in names]
        device = next(self.model.parameters()).device
        with self._lock:
            disabled = [layer._disable_adapters for layer in self._tuner_layers]
            for layer in self._tuner_layers:
                layer._disable_adapters = True  # each LoRA layer computes its base layer only
            self._route = _Route(torch.tensor(slots, dtype=torch.long, device=device),
                                 slots[0] if len(set(slots)) == 1 else None)
            try:
                yield {}
            finally:
                self._route = None
                for layer, was in zip(self._tuner_layers, disabled):
                    layer._disable_adapters = was

    def __call__(self, adapter_names: list[str], **inputs: Any) -> Any:
        """One forward pass, row ``i`` through adapter ``adapter_names[i]``."""
        with self.routed(adapter_names) as extra:
            return self.model(**inputs, **extra)

    def generate(self, adapter_names: list[str], **kwargs: Any) -> Any:
        """``model.generate`` with row ``i`` through adapter ``adapter_names[i]`` at every step."""
        with self.routed(adapter_names) as extra:
            return self.model.generate(**kwargs, **extra)


def row_router(model: Any) -> RowRouter:
    """The model's :class:`RowRouter` (made once per model, its stacks rebuilt when its adapters changed)."""
    router = getattr(model, _ROUTER_ATTR, None)
    if router is None:
        router = RowRouter(model)
        object.__setattr__(model, _ROUTER_ATTR, router)  # not a submodule: plain attribute
    return router
