"""Per-row adapter routing on the tiny Llama: the stacked path answers a mixed batch (adapters of different
ranks and target modules, and base-model rows) exactly as each adapter alone, in one forward pass and through
``generate`` with its key/value cache; adapters it cannot stack (DoRA, LoRA on the embeddings) take PEFT's
path; the stacks follow adapters loaded and deleted."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from loraops.modeling import load_base, load_tokenizer  # noqa: E402
from loraops.registry import row_routing  # noqa: E402
from loraops.registry.row_routing import BASE_ROW, row_router  # noqa: E402

# name -> (rank, alpha, target modules): different ranks, targets and scalings
ADAPTERS = {
    "attn-r2": (2, 4, ["q_proj", "v_proj"]),
    "mlp-r8": (8, 16, ["gate_proj", "up_proj", "down_proj"]),
    "all-r4": (4, 3, "all-linear"),
}
TEXTS = ["where is my parcel", "I want my money back please", "cancel", "new address for my order please now"]


def randomise(model, name: str, seed: int) -> None:
    """Random lora_B (PEFT starts it at zero, where every adapter answers as the base)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if f"lora_B.{name}." in param_name or f"lora_embedding_B.{name}" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
            if f"lora_magnitude_vector.{name}" in param_name:
                param.mul_(1.5)


def add(model, name: str, seed: int, base_dir=None, **config):
    """``model`` with adapter ``name`` added (a new PeftModel on ``base_dir`` when ``model`` is None)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(**config)
    if model is None:
        model = get_peft_model(load_base(base_dir), lora, adapter_name=name)
    else:
        model.add_adapter(name, lora)
    randomise(model, name, seed)
    model.eval()
    return model


@pytest.fixture
def model(tiny_base):
    peft_model = None
    for seed, (name, (rank, alpha, targets)) in enumerate(ADAPTERS.items()):
        peft_model = add(peft_model, name, seed, tiny_base, r=rank, lora_alpha=alpha, target_modules=targets)
    return peft_model


@pytest.fixture
def batch(tiny_base):
    tokenizer = load_tokenizer(tiny_base, padding_side="left")
    return tokenizer, tokenizer(TEXTS, return_tensors="pt", padding=True)


def alone_logits(model, name: str, inputs) -> torch.Tensor:
    """The batch through one adapter as PEFT runs it with that adapter active (the base for BASE_ROW)."""
    with torch.inference_mode():
        if name == BASE_ROW:
            with model.disable_adapter():
                return model(**inputs).logits
        model.set_adapter(name)
        return model(**inputs).logits


# 0: always gather each row's own matrices; huge: always multiply by all adapters and mask
WAYS = pytest.mark.parametrize("gather_cost", [0, 10**9], ids=["gathered", "masked"])


@WAYS
def test_a_mixed_batch_on_the_stacked_path_equals_each_adapter_alone(model, batch, gather_cost, monkeypatch):
    monkeypatch.setattr(row_routing, "GATHER_COST", gather_cost)
    _, inputs = batch
    rows = ["attn-r2", "mlp-r8", BASE_ROW, "all-r4"]
    alone = {name: alone_logits(model, name, inputs) for name in set(rows)}
    for a in alone:  # the adapters answer differently, or equality below shows nothing
        for b in alone:
            assert a == b or not torch.allclose(alone[a], alone[b], atol=1e-3)
    router = row_router(model)
    assert router.path(rows) == "stacked" and router.fallback == {}
    with torch.inference_mode():
        mixed = router(rows, **inputs).logits
        peft_mixed = model(**inputs, adapter_names=rows).logits
    for i, name in enumerate(rows):
        torch.testing.assert_close(mixed[i], alone[name][i], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed, peft_mixed, atol=1e-4, rtol=1e-4)
    # one adapter for every row: its own unpadded matrices, the same answer
    with torch.inference_mode():
        single = router(["mlp-r8"] * len(TEXTS), **inputs).logits
    torch.testing.assert_close(single, alone["mlp-r8"], atol=1e-4, rtol=1e-4)
    # each adapter is held once: PEFT's weights of a layer are views of that layer's stacks
    q_proj = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))
    assert len({q_proj.lora_A[n].weight.untyped_storage().data_ptr() for n in ("attn-r2", "all-r4")}) == 1
    # outside a routed batch the model is PEFT's again: the active adapter, no delta added twice
    torch.testing.assert_close(alone_logits(model, "all-r4", inputs), alone["all-r4"])


@WAYS
def test_generated_answers_on_the_stacked_path_equal_each_adapter_alone(model, batch, gather_cost, monkeypatch):
    monkeypatch.setattr(row_routing, "GATHER_COST", gather_cost)
    tokenizer, inputs = batch
    rows = ["all-r4", "attn-r2", "mlp-r8", "all-r4"]
    settings = dict(max_new_tokens=8, do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        mixed = row_router(model).generate(rows, **inputs, **settings)
        alone = {}
        for name in set(rows):
            model.set_adapter(name)
            alone[name] = model.generate(**inputs, **settings)
    assert len({tuple(a[0].tolist()) for a in alone.values()}) > 1  # the adapters generate differently
    for i, name in enumerate(rows):
        assert mixed[i].tolist() == alone[name][i].tolist()


def test_adapters_it_cannot_stack_take_peft_path(model, batch):
    _, inputs = batch
    add(model, "dora", 7, r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True)
    add(model, "embed", 8, r=4, lora_alpha=8, target_modules=["embed_tokens", "v_proj"])
    router = row_router(model)
    with torch.inference_mode():
        router(["attn-r2"], **{k: v[:1] for k, v in inputs.items()})  # a routed call rebuilds the stacks
    assert "DoRA" in router.fallback["dora"] and "Embedding" in router.fallback["embed"]
    assert set(router.slots) == set(ADAPTERS)
    assert router.path(["attn-r2", "embed"]) == "peft" and router.path(["attn-r2", "mlp-r8"]) == "stacked"
    rows = ["embed", "attn-r2", "embed", BASE_ROW]
    alone = {name: alone_logits(model, name, inputs) for name in set(rows)}
    assert not torch.allclose(alone["embed"], alone[BASE_ROW], atol=1e-3)
    with torch.inference_mode():
        mixed = router(rows, **inputs).logits
    for i, name in enumerate(rows):
        torch.testing.assert_close(mixed[i], alone[name][i], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="DoRA"):  # PEFT's own refusal: it cannot mix DoRA rows either
        with torch.inference_mode():
            router(["dora", "attn-r2", "dora", "dora"], **inputs)
    model.train()  # dropout would be active: PEFT's path, per call
    assert router.path(["attn-r2"]) == "peft"


def test_the_stacks_follow_adapters_loaded_and_deleted(model, batch):
    _, inputs = batch
    router = row_router(model)
    assert set(router.slots) == set(ADAPTERS)
    model.delete_adapter("mlp-r8")
    add(model, "mlp-r16", 11, r=16, lora_alpha=8, target_modules=["up_proj", "o_proj"])
    rows = ["mlp-r16", "attn-r2", "mlp-r16", "all-r4"]
    alone = {name: alone_logits(model, name, inputs) for name in set(rows)}
    with torch.inference_mode():
        mixed = router(rows, **inputs).logits
    assert set(router.slots) == {"attn-r2", "all-r4", "mlp-r16"} and router.path(rows) == "stacked"
    for i, name in enumerate(rows):
        torch.testing.assert_close(mixed[i], alone[name][i], atol=1e-4, rtol=1e-4)


def test_serving_answers_route_rows_through_the_stacked_path(model, batch, monkeypatch):
    """``answer_texts`` with per-row adapters (what ``loraops serve`` calls) answers as each adapter alone,
    through the router's stacked path (PEFT's per-row path is never entered)."""
    from peft.tuners.lora import layer as lora

    from loraops.config import PrepareParams
    from loraops.data import prompt_spec
    from loraops.registry.serving import PromptSpec, answer_texts

    tokenizer, _ = batch
    spec = PromptSpec(prompt_spec(["track_order", "cancel_order", "request_refund"], PrepareParams()))
    rows = ["attn-r2", "mlp-r8", "all-r4", "attn-r2"]
    alone = {}
    for name in set(rows):
        model.set_adapter(name)
        alone[name] = answer_texts(model, tokenizer, [spec] * len(TEXTS), TEXTS, 4)
    entered = []
    original = lora.Linear._mixed_batch_forward
    monkeypatch.setattr(lora.Linear, "_mixed_batch_forward",  # a spy: PEFT's per-row path still runs if entered
                        lambda self, *a, **k: entered.append(1) or original(self, *a, **k))
    mixed = answer_texts(model, tokenizer, [spec] * len(TEXTS), TEXTS, 4, adapter_names=rows)
    assert mixed == [alone[name][i] for i, name in enumerate(rows)]
    assert entered == [] and row_router(model).path(rows) == "stacked"
