"""The train benchmark's model FLOPs count (bench/flops.py) on the tiny Llama, against its config by hand."""

from bench.flops import matmul_params, measured_matmul_rate, model_flops_per_step, peak_flops
from loraops.config import LoraParams
from loraops.training import build_model


def test_matmul_weights_of_base_adapter_and_head_match_the_architecture(tiny_base):
    model = build_model(tiny_base, "lora", LoraParams(r=4, alpha=8, target_modules="attention"))
    c = model.get_base_model().config
    d, kv = c.hidden_size, c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    layer = 2 * d * d + 2 * d * kv + 3 * d * c.intermediate_size  # q, o; k, v; gate, up, down
    adapter = 4 * (2 * (d + d) + 2 * (d + kv))  # r=4: A is r x in, B is out x r; q, o and k, v
    assert matmul_params(model) == {"body": c.num_hidden_layers * layer, "head": c.vocab_size * d,
                                    "adapter": c.num_hidden_layers * adapter}
    # Full fine-tuning: the same base, no adapter; the tied head counts once, the embedding lookup not at all.
    full = matmul_params(build_model(tiny_base, "lora", None))
    assert full == {"body": c.num_hidden_layers * layer, "head": c.vocab_size * d, "adapter": 0}


def test_model_flops_formula_and_a_measured_cpu_peak():
    weights = {"body": 100, "head": 10, "adapter": 3}
    # tokens 8, logits at 2 positions: frozen-base matmuls 100 x 8 + 10 x 2 = 820
    assert model_flops_per_step(weights, 8, 2, full=True) == 6 * 820
    assert model_flops_per_step(weights, 8, 2, full=False) == 4 * 820 + 6 * 3 * 8
    rate, how = measured_matmul_rate("cpu", size=256, repeats=2)
    assert rate > 1e8 and "float32 256x256" in how and "torch threads" in how
    peak = peak_flops("cpu")
    assert peak["flops_per_second"] == peak["measured_flops_per_second"] and peak["method"].startswith("measured")
