"""Each row of a batch answered by its own LoRA adapter, all adapters loaded on one PEFT model.

PEFT's per-row path (``adapter_names=``) loops over the batch's adapters inside every LoRA layer: a gather of
the adapter's rows, its two small products and an ``index_add`` per adapter and layer, hundreds of small ops
per forward pass. :class:`RowRouter` computes the same sums with a fixed number of ops per layer whatever
the mix: per LoRA layer, the served adapters' ``A`` and ``B`` are stacked (unpadded, one adapter under the
other; PEFT's own weights become views of the stacks, so nothing is held twice) and a batch adds
``bmm(bmm(x, A[rows]) * scaling, B[rows])`` to the base layer's output, each row's matrices gathered from the
stacks and zero-padded to the batch's largest rank (an adapter that does not target the layer: zeros), or,
for few tokens per row (generated tokens), ``((x @ A_all) * mask[rows]) @ B_all``: every adapter's ranks
computed and all but the row's own masked out, which copies no weights.

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
    """One LoRA layer's stacked adapters, unpadded: ``a`` [S + 1, in] is every adapter's ``lora_A`` weight one
    under the other (S: the sum of their ranks), ``b`` [S + 1, out] their ``lora_B`` transposed, ``scale``
    [S + 1] each row's adapter scaling; the last row is zeros (a row whose adapter does not target this
    layer, or the base). ``spans[slot]``: (first row, rank, scaling) of that adapter, ``None`` where it does not
    target this layer. ``layout``: a number shared by the layers stacked alike (same spans, same device), so
    that a batch works out each row's columns once per layout, not per layer."""

    def __init__(self, a: Any, b: Any, scale: Any, spans: list[tuple[int, int, float] | None]):
        self.a, self.b, self.scale, self.spans = a, b, scale, spans
        self.zero = int(a.shape[0]) - 1
        self.layout = 0  # set by RowRouter.rebuild


# What copying one gathered weight element costs, in multiply-adds: measured on 2 CPU cores (one torch thread)
# with SmolLM2-135M's layer shapes and 8 adapters of ranks 2 to 32, gathering and masking cost the same at about
# 8 tokens per row. It only picks between two exact ways of computing the same sum (see _add_delta).
GATHER_COST = 16


class _Plan:
    """One layer layout's routing for a batch: ``columns`` [rows, R], each row's rows of the stacks padded
    with the zero row to the batch's largest rank R; ``mask`` [rows, 1, S + 1], each row's adapter scaling on
    its own rows of the stacks, zero elsewhere; ``rank`` R, ``total`` S + 1."""

    def __init__(self, columns: Any, mask: Any, rank: int, total: int):
        self.columns, self.mask, self.rank, self.total = columns, mask, rank, total


class _Route:
    """The batch being routed: each row's slot and, when all rows share one, that slot; ``plans`` caches a
    :class:`_Plan` per layer layout (``None``: no row's adapter targets layers of that layout)."""

    def __init__(self, slots: list[int]):
        self.slots, self.rows = slots, len(slots)
        self.single = slots[0] if len(set(slots)) == 1 else None
        self.plans: dict[int, _Plan | None] = {}

    def plan_for(self, stack: _LayerStack) -> _Plan | None:
        import torch

        key = stack.layout
        if key in self.plans:
            return self.plans[key]
        spans = [stack.spans[slot] for slot in self.slots]
        rank = max((span[1] for span in spans if span is not None), default=0)
        plan = None
        if rank:
            device, total = stack.a.device, int(stack.a.shape[0])
            columns = torch.tensor([[span[0] + j if span is not None and j < span[1] else stack.zero
                                     for j in range(rank)] for span in spans], dtype=torch.long, device=device)
            mask = torch.zeros(self.rows, 1, total, dtype=stack.a.dtype, device=device)
            for row, span in enumerate(spans):
                if span is not None:
                    mask[row, 0, span[0]:span[0] + span[1]] = span[2]
            plan = _Plan(columns, mask, rank, total)
        self.plans[key] = plan
        return plan


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
        self._lock = threading.RLock()  # one routed batch or rebuild at a time: the route and stacks are state
        self.rebuild()

    # --- building ----------------------------------------------------------------------------------------

    def current_signature(self) -> tuple[Any, ...]:
        # load_adapter makes a new config object: a name reloaded with other weights is a change too
        return tuple((name, id(config)) for name, config in self.model.peft_config.items())

    def rebuild(self) -> None:
        """Stack the model's stackable adapters again (after an adapter was loaded or deleted)."""
        with self._lock:
            self._rebuild()

    def _rebuild(self) -> None:
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
        layouts: dict[tuple[Any, ...], int] = {}
        with torch.no_grad():
            for module in self.model.modules():
                if type(module) is not lora.Linear:
                    continue
                here = [name for name in stacked if name in module.lora_A]
                if not here:
                    continue
                stack = self._stack(module, stacked)
                stack.layout = layouts.setdefault((tuple(stack.spans), str(stack.a.device)), len(layouts))
                self._handles.append(module.register_forward_hook(partial(self._add_delta, stack)))
        self.signature = self.current_signature()

    @staticmethod
    def _stack(module: Any, stacked: list[str]) -> _LayerStack:
        """Stack the layer's adapters; PEFT's own ``lora_A``/``lora_B`` weights then become views of the stacks,
        so each adapter is held once (PEFT's path, the fallback, reads the very same numbers)."""
        import torch

        present = [(slot, name) for slot, name in enumerate(stacked) if name in module.lora_A]
        first = module.lora_A[present[0][1]].weight
        total = sum(module.lora_A[name].weight.shape[0] for _, name in present)
        a = torch.zeros(total + 1, module.in_features, dtype=first.dtype, device=first.device)
        b = torch.zeros(total + 1, module.out_features, dtype=first.dtype, device=first.device)
        scale = torch.zeros(total + 1, dtype=first.dtype, device=first.device)
        spans: list[tuple[int, int, float] | None] = [None] * (len(stacked) + 1)
        start = 0
        for slot, name in present:
            weight_a, weight_b = module.lora_A[name].weight, module.lora_B[name].weight  # [r, in], [out, r]
            r, scaling = weight_a.shape[0], float(module.scaling[name])
            a[start:start + r] = weight_a
            b[start:start + r] = weight_b.t()
            scale[start:start + r] = scaling
            spans[slot] = (start, r, scaling)
            start += r
        for slot, name in present:
            begin, r, _ = spans[slot]
            for weight, view in ((module.lora_A[name].weight, a[begin:begin + r]),
                                 (module.lora_B[name].weight, b[begin:begin + r].t())):
                if weight.dtype == view.dtype and weight.device == view.device:
                    weight.data = view
        return _LayerStack(a, b, scale, spans)

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
            span = stack.spans[route.single]
            if span is None:  # this adapter does not target this layer
                return None
            begin, r, scaling = span
            hidden = xs @ stack.a[begin:begin + r].t()
            delta = hidden.mul_(scaling) @ stack.b[begin:begin + r]
        else:
            plan = route.plan_for(stack)
            if plan is None:
                return None
            flat = xs.reshape(route.rows, -1, xs.shape[-1])
            tokens = flat.shape[0] * flat.shape[1]
            # Two ways to the same sum. Gathering each row's own A and B (padded to the batch's largest rank)
            # multiplies little but copies rows x R weights per layer: it wins on long inputs (prompts).
            # Multiplying every row by all the layer's adapters and masking out the others' ranks copies
            # nothing: it wins on few tokens per row (each generated token).
            if tokens * plan.total <= tokens * plan.rank + route.rows * plan.rank * GATHER_COST:
                hidden = flat @ stack.a.t()  # [rows, tokens, S + 1]: every adapter's ranks
                delta = hidden.mul_(plan.mask) @ stack.b
            else:
                hidden = torch.bmm(flat, stack.a[plan.columns].transpose(1, 2))  # [rows, tokens, R]
                hidden.mul_(stack.scale[plan.columns].unsqueeze(1))
                delta = torch.bmm(hidden, stack.b[plan.columns])
            delta = delta.reshape(*x.shape[:-1], stack.b.shape[-1])
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
        with self._lock:
            if self.signature != self.current_signature():
                self._rebuild()
            names = list(adapter_names)
            if self.path(names) == "peft":
                yield {"adapter_names": names}
                return
            zero = len(self.slots)
            slots = [self.slots.get(name, zero) for name in names]
            disabled = [layer._disable_adapters for layer in self._tuner_layers]
            for layer in self._tuner_layers:
                layer._disable_adapters = True  # each LoRA layer computes its base layer only
            self._route = _Route(slots)
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
