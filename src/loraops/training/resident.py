"""The frozen base LoRA trains on (:func:`training_base`), a fresh adapter on it (:func:`attach_adapter`),
and one such base per search worker, loaded (for QLoRA quantised) once and lent to trial after trial
(:class:`ResidentBase`).

Loading and quantising the base is most of a short trial's overhead (bench/bench_search_overhead.py). A trial
borrows the base: :meth:`ResidentBase.attach` puts a fresh LoRA adapter on it, its init seeded as on a fresh
load, and :meth:`ResidentBase.release` takes the adapter off again (PEFT's ``unload``) and undoes what training
did to the base besides, so that every trial starts from the base exactly as it was loaded and a trial's result
does not depend on the trials before it. Full fine-tuning changes the base's weights: it always loads its own
copy (:func:`loraops.training.train` refuses a resident base for ``lora=None``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraops.config import LoraParams
from loraops.core.allocator import release_free_memory
from loraops.modeling import load_base, load_tokenizer, lora_config
from loraops.training.dropout import fold_lora_dropout


def training_base(base_dir: Path, method: str) -> Any:
    """The frozen base LoRA trains on: QLoRA's 4-bit NF4 base (prepared for k-bit training) or, for ``lora``,
    the full-precision base. One load of it can serve many adapters, one after another
    (:class:`ResidentBase`)."""
    from peft import prepare_model_for_kbit_training

    quantized = method == "qlora"
    model = load_base(base_dir, quantize_4bit=quantized)
    if quantized:
        # Casts norms to fp32 and freezes the base; LoRA gradients flow through the frozen 4-bit layers.
        # Gradient checkpointing is a separate param (train.gradient_checkpointing), applied by the Trainer.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        # On a CPU with AVX512-BF16, bitsandbytes rewrites a 4-bit layer in place at its first no-grad forward
        # (the first validation) into an inference layout whose backward passes no gradient to the layer's
        # input: every LoRA gradient below it was wrong from then on. Kept in the layout it trains in.
        for module in model.modules():
            if getattr(module, "support_avx512bf16_for_cpu", False):
                module.support_avx512bf16_for_cpu = False
    return model


def attach_adapter(model: Any, lora: LoraParams, seed: int | None = None) -> Any:
    """A fresh LoRA adapter on ``model`` (modified in place: PEFT injects its layers). With ``seed`` the
    adapter's random init depends on the seed alone, not on what ran in this process before, so an adapter
    attached to a base already in memory starts exactly as one on a freshly loaded base."""
    from peft import get_peft_model
    from transformers import set_seed

    if seed is not None:
        set_seed(seed)
    peft_model = get_peft_model(model, lora_config(lora))
    fold_lora_dropout(peft_model)  # same masks and gradients, a bool mask kept for backward, not a float copy
    return peft_model


@dataclass
class _LoadedState:
    """What a trial may change on the base and :meth:`ResidentBase.release` puts back or checks."""

    use_cache: Any
    training: bool
    requires_grad: dict[str, bool]
    embedding_hooks: int
    # Identity of every 4-bit weight and its quantisation state: bitsandbytes replaces them when it rewrites a
    # layer (training_base keeps the one known rewrite off); a base whose 4-bit weights were replaced is not
    # the one loaded.
    quantized: list[tuple[Any, int, Any, int]] = field(default_factory=list)


def _quantized_identity(model: Any) -> list[tuple[Any, int, Any, int]]:
    return [(p, p.data.data_ptr(), p.quant_state, p.quant_state.absmax.data_ptr())
            for p in model.parameters() if getattr(p, "quant_state", None) is not None]


def _same_identity(now: list[tuple[Any, int, Any, int]], loaded: list[tuple[Any, int, Any, int]]) -> bool:
    return len(now) == len(loaded) and all(
        a[0] is b[0] and a[1] == b[1] and a[2] is b[2] and a[3] == b[3] for a, b in zip(now, loaded))


class ResidentBase:
    """The base of ``base_dir`` for ``method`` (``qlora``: 4-bit NF4, prepared for k-bit training; ``lora``:
    full precision), loaded at the first :meth:`attach` and kept for the next ones. One adapter at a time."""

    def __init__(self, base_dir: Path, method: str):
        if method not in ("qlora", "lora"):
            raise ValueError(f"a resident base is for LoRA methods (qlora, lora), not {method!r}")
        self.base_dir, self.method = Path(base_dir), method
        self._model: Any = None
        self._tokenizer: Any = None
        self._state: _LoadedState | None = None
        self._attached: Any = None

    @property
    def model(self) -> Any:
        """The base model as loaded (an adapter on it while a trial runs); None before the first attach."""
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def tokenizer(self) -> Any:
        """The base's tokenizer as training uses it (right padding)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.base_dir)
        return self._tokenizer

    def _load(self) -> Any:
        model = training_base(self.base_dir, self.method)
        self._state = _LoadedState(
            use_cache=getattr(model.config, "use_cache", None), training=model.training,
            requires_grad={name: p.requires_grad for name, p in model.named_parameters()},
            embedding_hooks=len(model.get_input_embeddings()._forward_hooks), quantized=_quantized_identity(model))
        self._model = model
        return model

    def attach(self, lora: LoraParams, seed: int) -> Any:
        """A fresh LoRA adapter (seeded with ``seed``) on the base, as a PEFT model to train."""
        if self._attached is not None:
            raise RuntimeError("the resident base still carries the last trial's adapter; release() it first")
        model = self._model if self._model is not None else self._load()
        self._attached = attach_adapter(model, lora, seed)
        return self._attached

    def inference_model(self) -> Any:
        """The attached adapter on its base, as the evaluator would load it from disk: eval mode, activation
        checkpointing off, no input-gradient hooks, the KV cache setting of the loaded config."""
        if self._attached is None:
            raise RuntimeError("no adapter is attached to the resident base")
        self._settle(self._model)
        self._attached.eval()
        return self._attached

    def _settle(self, model: Any) -> None:
        # The Trainer switches on activation checkpointing (with its input-gradient hook on the embeddings)
        # and turns the KV cache off in the config; none of it is the base's own.
        if any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
            disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
            disable()
        model.disable_input_require_grads()
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = self._state.use_cache

    def release(self) -> bool:
        """Take the trial's adapter off and put the base back as loaded; True when the base stays. One that
        cannot be put back is dropped with a warning (the next :meth:`attach` loads a fresh one): the trial's
        results stand, and no later trial inherits its leftovers."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        attached, self._attached = self._attached, None
        if attached is None:
            return self._model is not None
        model, state = self._model, self._state
        try:
            if attached.unload() is not model:
                raise RuntimeError("PEFT unload returned another model than the resident base")
            self._settle(model)
            if not _same_identity(_quantized_identity(model), state.quantized):
                raise RuntimeError("4-bit weights of the base were rewritten during the trial")
            for name, param in model.named_parameters():
                param.requires_grad_(state.requires_grad[name])
            model.train(state.training)
            if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
                raise RuntimeError("LoRA layers are left on the base after unload")
            if len(model.get_input_embeddings()._forward_hooks) != state.embedding_hooks:
                raise RuntimeError("the base's embeddings keep a hook the trial added")
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, this base is not the loaded one any more
            warnings.warn(f"resident base of {self.base_dir} dropped, the next trial loads it again: {exc}",
                          stacklevel=2)
            self._model = self._state = None
            return False
        finally:
            release_free_memory()  # the trial's activations and optimiser state: the next trial starts lean
        return True
