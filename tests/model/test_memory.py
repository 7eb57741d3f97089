"""Memory that QLoRA and LoRA training do not need: a float copy of every LoRA input kept for backward, a
memory map of the weights file held by the 4-bit base, freed blocks the allocator keeps."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loraops.config import LoraParams
from loraops.training import CompletionCollator, IGNORE, example_mean_loss


def _batch():
    return CompletionCollator(pad_token_id=0)([
        {"input_ids": [11, 12, 13, 14, 15, 16, 17, 18, 19], "labels": [IGNORE] * 3 + [14, 15, 16, 17, 18, 19]},
        {"input_ids": [21, 22, 23, 24, 25], "labels": [IGNORE] * 4 + [25]},
    ])


def _peft_dropout_model(base, lora):
    """PEFT's own LoRA layers, dropout as PEFT applies it."""
    from peft import get_peft_model
    from transformers import set_seed

    from loraops.modeling import lora_config

    set_seed(0)
    return get_peft_model(base, lora_config(lora))


def _step(model, seed=7):
    """Loss, LoRA gradients and the float bytes autograd kept for backward, of one training forward/backward."""
    import torch

    kept, seen = [0], set()

    def pack(t):
        storage = t.untyped_storage()
        if t.is_floating_point() and storage.data_ptr() not in seen and not isinstance(t, torch.nn.Parameter):
            seen.add(storage.data_ptr())
            kept[0] += storage.nbytes()
        return t

    model.train()
    torch.manual_seed(seed)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = example_mean_loss(model, _batch())
    model.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, kept[0]


def test_folded_lora_dropout_gives_peft_dropouts_losses_and_gradients_keeping_less(tiny_base):
    import torch

    from loraops.modeling import load_base
    from loraops.training.dropout import MaskedDropoutLinear
    from loraops.training.resident import attach_adapter

    lora = LoraParams(r=4, alpha=8, dropout=0.3)
    plain = _peft_dropout_model(load_base(tiny_base), lora)
    folded = attach_adapter(load_base(tiny_base), lora, seed=0)
    inputs = [0]  # elements entering the folded layers in one forward pass
    for module in folded.modules():
        if isinstance(module, MaskedDropoutLinear):
            module.register_forward_pre_hook(lambda m, args: inputs.__setitem__(0, inputs[0] + args[0].numel()))
    assert not any(isinstance(m, MaskedDropoutLinear) for m in plain.modules())
    loss_plain, grads_plain, kept_plain = _step(plain)
    loss_folded, grads_folded, kept_folded = _step(folded)
    assert torch.equal(loss_plain, loss_folded)  # the same masks: same values, not just close
    assert grads_plain.keys() == grads_folded.keys() and grads_plain
    for name in grads_plain:
        torch.testing.assert_close(grads_folded[name], grads_plain[name], rtol=1e-5, atol=1e-7)
    # PEFT keeps, per LoRA layer, the dropout noise and the dropped input (two float copies of the input, 8 bytes
    # an element); folded, a bool mask (1 byte) and the input the base layer keeps anyway.
    assert inputs[0] > 0
    assert kept_plain - kept_folded >= 5 * inputs[0]
    # Dropout is really applied: another seed gives other gradients (B starts at zero, so not another loss);
    # in eval mode none is applied.
    folded.zero_grad()
    other = _step(folded, seed=8)[1]
    assert any(not torch.equal(other[n], grads_folded[n]) for n in other)
    folded.eval()
    with torch.no_grad():
        a, b = example_mean_loss(folded, _batch()), example_mean_loss(folded, _batch())
    assert torch.equal(a, b)


def test_folded_adapter_saves_the_same_keys_as_peft(tiny_base, tmp_path):
    from safetensors.torch import load_file

    from loraops.modeling import load_base
    from loraops.training.resident import attach_adapter

    lora = LoraParams(r=4, alpha=8, dropout=0.1)
    _peft_dropout_model(load_base(tiny_base), lora).save_pretrained(tmp_path / "plain")
    attach_adapter(load_base(tiny_base), lora, seed=0).save_pretrained(tmp_path / "folded")
    plain, folded = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("plain", "folded"))
    assert plain.keys() == folded.keys()
    assert all((plain[k] == folded[k]).all() for k in plain)  # same seeded init


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_quantized_base_holds_no_memory_map_of_the_weights_file(tiny_base):
    import gc

    from loraops.modeling import load_base

    model = load_base(tiny_base, quantize_4bit=True)
    gc.collect()
    weights = str((tiny_base / "model.safetensors").resolve())
    mapped = [line for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(weights)]
    assert mapped == [], "the 4-bit base still maps the weights file"
    assert model(input_ids=__import__("torch").tensor([[11, 12, 13]])).logits.isfinite().all()


def _rss_after_freeing(release: bool, allocator: str) -> float:
    """RSS (MB) growth that stays after allocating and freeing 8 MB blocks, in a fresh process on ``allocator``."""
    import os

    from loraops.core.allocator import allocator_environment

    script = textwrap.dedent(f"""
        import torch
        from loraops.core.allocator import active_allocator, release_free_memory
        from loraops.training import current_memory_mb
        assert active_allocator() == {allocator!r}, active_allocator()
        big = torch.ones(4 * 2**20); del big  # freeing a 16 MB block raises glibc's threshold to 16 MB
        start = current_memory_mb()
        blocks = [torch.ones(2 * 2**20) for _ in range(40)]   # 40 x 8 MB, in the heap
        keep = blocks[-1]  # the heap's top stays in use: only a trim inside the heap gives the rest back
        del blocks
        if {release}:
            assert release_free_memory()
        print(current_memory_mb() - start)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env = allocator_environment({**env, "LORAOPS_ALLOCATOR": allocator})
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and mimalloc on Linux")
@pytest.mark.parametrize("allocator", ["system", "mimalloc"])
def test_freed_blocks_go_back_to_the_system_after_a_stage(allocator):
    assert _rss_after_freeing(release=False, allocator=allocator) > 100  # both keep the freed blocks for reuse
    assert _rss_after_freeing(release=True, allocator=allocator) < 40  # only the kept block (8 MB) remains


def test_answer_scoring_projects_only_the_answer_positions(tiny_base):
    """The evaluator's teacher-forced answer NLL (retention, perplexity) applies the 49k-row output projection
    (here the tiny model's) to the answer positions alone, and equals the NLL from every position's logits."""
    import torch
    import torch.nn.functional as F

    from loraops.evaluation import answer_nll
    from loraops.modeling import load_for_inference

    model, tokenizer = load_for_inference(tiny_base)
    prompts = ["where is my parcel", "cancel the order i placed yesterday please"]
    answers = [" track_order", " cancel_order"]
    projected = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda m, args, out: projected.append(args[0].shape[:-1].numel()))
    got = answer_nll(model, tokenizer, prompts, answers, batch_size=2, share_prefix=False)
    hook.remove()
    answer_tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    assert sum(projected) == answer_tokens == sum(count for _, count in got)
    for (nll, count), prompt, answer in zip(got, prompts, answers):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + a])).logits[0, len(p) - 1:-1]
        assert count == len(a)
        assert nll == pytest.approx(float(F.cross_entropy(logits, torch.tensor(a), reduction="sum")), rel=1e-5)
