"""Model FLOPs utilisation (MFU) of a train step: model FLOPs per second over the machine's peak.

Model FLOPs per step count the matmuls the step needs, not what the hardware executed (recomputation under
activation checkpointing and 4-bit dequantisation are not counted):

- full fine-tuning: ``6 x (N_body x T + N_head x H)``: forward 2, backward 4 (activation grads 2, weight grads 2)
- LoRA / QLoRA (frozen base): ``4 x (N_body x T + N_head x H) + 6 x N_adapter x T``: the base's forward and its
  activation grads (no weight grads), the adapter's forward, activation grads and weight grads

``T`` tokens per step (batch x sequence), ``N_body`` the weights of the decoder's linear layers (the embedding
lookup is no matmul), ``N_head`` the output projection's (vocabulary x hidden, tied or not), ``H`` the positions
whose logits are computed (the answer positions for the pipeline's loss, every position with the full-logits
loop), ``N_adapter`` the LoRA A and B weights. Attention's score and value products (``4 x layers x seq x
hidden`` per token in the forward: about 4% of SmolLM2-135M's forward at 128 tokens) are left out, as in the
usual ``6N`` estimate.

The peak: on CPU a measured rate, the best of timed large fp32 matmuls with torch's threads (the pipeline
trains in fp32 there); on CUDA the datasheet's dense BF16 tensor rate for the device, with a measured bf16
matmul rate beside it (the measured one where the device is not in the table).
"""

from __future__ import annotations

import time
from typing import Any

# Dense (no sparsity) BF16 tensor-core FLOP/s from NVIDIA's datasheets; the first name contained in
# torch.cuda.get_device_name() wins, so the more specific names come first.
DATASHEET_BF16_DENSE = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989.4e12),  # H100 SXM: "NVIDIA H100 80GB HBM3"
    ("H200 NVL", 835e12), ("H200", 989.4e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
]


def matmul_params(model: Any) -> dict[str, int]:
    """Weights of the model's matmuls: ``body`` (decoder linears), ``head`` (output projection), ``adapter``
    (LoRA A and B); 4-bit layers count their logical size."""
    import torch

    from loraops.training.dropout import MaskedDropoutLinear

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = causal.get_output_embeddings()
    counts = {"body": 0, "head": head.in_features * head.out_features, "adapter": 0}
    for name, module in causal.named_modules():
        # Training's LoRA A matrices carry their dropout (loraops.training.dropout): a linear map all the same.
        if module is head or not isinstance(module, (torch.nn.Linear, MaskedDropoutLinear)):
            continue
        counts["adapter" if ".lora_" in name else "body"] += module.in_features * module.out_features
    return counts


def model_flops_per_step(params: dict[str, int], tokens: int, logit_positions: int, full: bool) -> int:
    """The module docstring's formula: ``tokens`` per step, ``logit_positions`` where the head is applied."""
    frozen = params["body"] * tokens + params["head"] * logit_positions
    if full:
        return 6 * frozen
    return 4 * frozen + 6 * params["adapter"] * tokens


def measured_matmul_rate(device: str, size: int | None = None, repeats: int = 5) -> tuple[float, str]:
    """(FLOP/s, how): the best of ``repeats`` timed ``size`` x ``size`` matmuls, fp32 on CPU, bf16 on CUDA."""
    import torch

    cuda = device == "cuda"
    size = size or (8192 if cuda else 2048)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    inner = 10 if cuda else 1  # a GPU matmul takes about a millisecond: time several per reading
    best = float("inf")
    for attempt in range(repeats + 1):  # the first one warms up (allocation, kernel choice)
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b)
        if cuda:
            torch.cuda.synchronize()
        if attempt:
            best = min(best, (time.perf_counter() - started) / inner)
    del a, b
    if cuda:
        torch.cuda.empty_cache()  # the runs that follow measure their own memory
    how = (f"measured: best of {repeats} {str(dtype).removeprefix('torch.')} {size}x{size} matmuls on "
           + (torch.cuda.get_device_name(0) if cuda else f"CPU, {torch.get_num_threads()} torch threads"))
    return 2 * size**3 / best, how


def peak_flops(device: str) -> dict[str, Any]:
    """The peak MFU divides by: ``flops_per_second``, ``method``, and the measured rate beside it."""
    import torch

    measured, how = measured_matmul_rate(device)
    peak = {"flops_per_second": measured, "method": how, "measured_flops_per_second": measured,
            "measured_method": how}
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        sheet = next((rate for key, rate in DATASHEET_BF16_DENSE if key in name), None)
        if sheet is not None:
            peak.update(flops_per_second=sheet, method=f"datasheet: dense BF16 tensor rate of {name}")
        else:
            peak["method"] = f"{how} ({name} is not in the datasheet table)"
    return peak
