"""The few-shot prompts' shared beginning computed once: the same answers and likelihoods as without it."""

import pytest

from loraops.config import EvalParams, PrepareParams
from loraops.data.demo import generate_demo_dataset
from loraops.evaluation import answer_nll, generate_answers
from loraops.evaluation.evaluator import base_prompts
from loraops.evaluation.prefix import SharedPrefix, common_prefix_length
from loraops.modeling import load_for_inference, load_tokenizer
from loraops.prepare import prepare


@pytest.fixture(scope="module")
def model(tiny_base):
    """The tiny base with its matrices redrawn ten times larger: at its initial scale it answers every few-shot
    prompt with the same newlines, which would hide a row given another row's or a shifted context."""
    import torch

    net, tokenizer = load_for_inference(tiny_base, None)
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in (p for p in net.parameters() if p.dim() == 2):
            weight.normal_(0.0, 0.2)
    return net, tokenizer


@pytest.fixture(scope="module")
def few_shot(model):
    """The base model's 8-shot prompts, suffixes of very different lengths (some requests repeated)."""
    _, tokenizer = model
    rows = generate_demo_dataset(seed=3, train_per_intent=4, test_per_intent=1)
    splits, labels, _ = prepare(rows, tokenizer, PrepareParams(max_length=384), seed=3)
    test = [dict(r, text=r["text"] * (1 + i % 3)) for i, r in enumerate(splits["test"][:7])]
    prompts, _ = base_prompts(test, labels, tokenizer, EvalParams(base_shots=8), PrepareParams(), splits["train"])
    return prompts, [r["completion"] for r in test], labels


def test_common_prefix_stops_short_of_the_shortest_prompt():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 3, 4, 7]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter keeps one token of its own
    assert common_prefix_length([[1, 2], [2, 1]]) == 0
    assert common_prefix_length([[5, 6, 7]]) == 2


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_shared_prefix_gives_the_same_answers(model, few_shot, constrained, batch_size):
    net, tokenizer = model
    prompts, _, labels = few_shot
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    shared = common_prefix_length(encoded)
    suffixes = {len(ids) - shared for ids in encoded}
    assert shared > 5 * max(suffixes) and len(suffixes) >= 4  # a long few-shot prefix, suffixes of many lengths
    kwargs = {"labels": labels if constrained else None}
    cached = generate_answers(net, tokenizer, prompts, batch_size, 10, **kwargs)
    plain = generate_answers(net, tokenizer, prompts, batch_size, 10, share_prefix=False, **kwargs)
    assert cached == plain
    assert len(set(cached)) > 1  # the answers depend on the request, so a mixed-up row would show
    if constrained:
        assert all(answer in labels for answer in cached)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_shared_prefix_gives_the_same_answer_likelihoods(model, few_shot, batch_size):
    net, tokenizer = model
    prompts, completions, _ = few_shot
    cached = answer_nll(net, tokenizer, prompts, completions, batch_size)
    plain = answer_nll(net, tokenizer, prompts, completions, batch_size, share_prefix=False)
    assert [n for _, n in cached] == [n for _, n in plain]
    assert [nll for nll, _ in cached] == pytest.approx([nll for nll, _ in plain], rel=1e-5, abs=1e-5)


def test_positions_after_the_prefix_matter_and_the_kept_cache_is_never_changed(model, few_shot):
    """The tolerance above would catch a position slip: suffix tokens fed one position early give other
    logits. And a batch's generate appends to its copy only, never to the cache kept for the next batch."""
    import torch

    net, tokenizer = model
    prompts, _, _ = few_shot
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    shared = SharedPrefix.of(net, encoded, net.device)
    kept = [(k.clone(), v.clone()) for k, v in ((layer.keys, layer.values) for layer in shared._cache.layers)]
    suffix = torch.tensor([encoded[0][len(shared):]])
    with torch.inference_mode():
        full = net(input_ids=torch.tensor([encoded[0]])).logits[0, len(shared):]
        right = net(**shared.forward_inputs(suffix, torch.ones_like(suffix))).logits[0]
        early = shared.forward_inputs(suffix, torch.ones_like(suffix))
        early["position_ids"] = early["position_ids"] - 1
        slipped = net(**early).logits[0]
    assert torch.allclose(right, full, atol=1e-5)
    assert (slipped - full).abs().max() > 1e-3
    runs = []
    for _ in range(2):
        batch = shared.generation_batch(encoded[:3], tokenizer.pad_token_id)
        with torch.inference_mode():
            runs.append(net.generate(**batch, max_new_tokens=4, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id))
    assert torch.equal(runs[0], runs[1])
    assert len(shared._cache.layers) == len(kept)
    for layer, (k, v) in zip(shared._cache.layers, kept):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)


def test_a_peft_adapter_on_the_4bit_base_gets_the_same_likelihoods_and_answers(tiny_base, few_shot):
    """The prefix cache goes through PEFT's forward and generate, on bitsandbytes' 4-bit layers (QLoRA)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from loraops.modeling import load_base

    torch.manual_seed(1)
    # init_lora_weights=False: B is random too, so the adapter changes the outputs (B = 0 would not)
    net = get_peft_model(load_base(tiny_base, quantize_4bit=True),
                         LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                    init_lora_weights=False)).eval()
    tokenizer = load_tokenizer(tiny_base, padding_side="left")
    prompts, completions, labels = few_shot
    cached = answer_nll(net, tokenizer, prompts, completions, 3)
    plain = answer_nll(net, tokenizer, prompts, completions, 3, share_prefix=False)
    assert [nll for nll, _ in cached] == pytest.approx([nll for nll, _ in plain], rel=1e-5, abs=1e-5)
    assert generate_answers(net, tokenizer, prompts, 3, 6, labels=labels) == \
        generate_answers(net, tokenizer, prompts, 3, 6, labels=labels, share_prefix=False)
