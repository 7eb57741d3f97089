"""Loading the local base model for training or inference, and building LoRA configs from params.

One loader serves QLoRA (4-bit NF4 base), plain LoRA and full fine-tuning, so that methods differ only in
what is quantised and what is trainable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from loraops.config import LoraParams
from loraops.core import ModelError
from loraops.core.distributed import local_rank
from loraops.modeling.base_model import INFO_FILE

# Module names per named set, for Llama-style blocks (SmolLM2, Llama, Mistral, Qwen2).
TARGET_MODULES = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
}


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_dtype() -> Any:
    """bf16 where the GPU supports it, fp32 otherwise (CPU bf16 matmuls are slow and lossy here)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def recorded_trust(base_dir: Path) -> bool:
    """Whether the base_model stage was told ``model.trust_remote_code: true`` for this folder (recorded in
    its ``loraops_base.json``); False when nothing says so."""
    info = base_dir / INFO_FILE
    try:
        return bool(json.loads(info.read_text()).get("trust_remote_code", False)) if info.is_file() else False
    except ValueError:
        return False


def load_tokenizer(base_dir: Path, padding_side: str = "right", trust_remote_code: bool | None = None) -> Any:
    """The base's tokenizer; ``trust_remote_code`` None means as the base_model stage recorded it."""
    from transformers import AutoTokenizer

    trust = recorded_trust(base_dir) if trust_remote_code is None else trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=trust)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


TOKEN_COUNT_CHUNK = 8192  # texts per tokenizer call: memory stays flat however many rows a dataset has


def counting_threads() -> int:
    """The CPUs this process may run on: how many chunks are tokenized at once."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _chunk_counts(backend: Any, texts: list[str], threads: int) -> list[int]:
    """Token counts of ``texts`` through a fast tokenizer's backend, ``threads`` chunks at a time (its
    ``encode_batch`` releases the GIL, so they run in parallel; the threads are joined before returning)."""
    def count_chunk(chunk: list[str]) -> list[int]:
        return [len(encoding) for encoding in backend.encode_batch([str(t) for t in chunk], add_special_tokens=False)]

    chunks = [texts[start:start + TOKEN_COUNT_CHUNK] for start in range(0, len(texts), TOKEN_COUNT_CHUNK)]
    if threads == 1 or len(chunks) < 2:
        return [n for chunk in chunks for n in count_chunk(chunk)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(chunks)), thread_name_prefix="token-count") as pool:
        return [n for counts in pool.map(count_chunk, chunks) for n in counts]


def _count_from_stdin() -> None:
    """The child's side of :func:`token_counter` with ``process``: the backend's JSON, the texts and the
    thread count as JSON on stdin (data only: nothing on the pipe can run code), the counts as 64-bit integers
    on stdout."""
    import sys
    from array import array

    from tokenizers import Tokenizer

    request = json.load(sys.stdin.buffer)
    tokenizer_json, texts, threads = request["tokenizer"], request["texts"], int(request["threads"])
    sys.stdout.buffer.write(array("q", _chunk_counts(Tokenizer.from_str(tokenizer_json), texts, threads)).tobytes())


def _count_in_child(backend: Any, texts: list[str], threads: int) -> list[int] | None:
    """Counts from a child interpreter (``python -c``, so nothing of this process's ``__main__`` runs again),
    or None when it could not give them (then this process counts)."""
    import subprocess
    import sys
    from array import array

    payload = json.dumps({"tokenizer": backend.to_str(), "texts": [str(t) for t in texts],
                          "threads": threads}).encode()
    code = "from loraops.modeling.loading import _count_from_stdin; _count_from_stdin()"
    try:
        done = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=False)
    except OSError:
        return None
    counts = array("q")
    counts.frombytes(done.stdout[:len(done.stdout) // counts.itemsize * counts.itemsize])
    return counts.tolist() if done.returncode == 0 and len(counts) == len(texts) else None


def token_counter(tokenizer: Any, threads: int | None = None,
                  process: bool = True) -> Callable[[list[str]], list[int]]:
    """Counts tokens per text as the model sees them (no special tokens added), in chunks. A fast tokenizer's
    Rust backend is asked for lengths only: the ids never become Python lists (for a million texts that was
    most of the time and gigabytes of memory).

    Chunks are tokenized by ``threads`` Python threads at once (default: one per CPU). The backend's
    ``encode_batch`` releases the GIL, so they run in parallel, while the backend's own thread pool stays off
    (``TOKENIZERS_PARALLELISM=false``): a process that forks after that pool ran leaves the child a pool without
    threads, the deadlock that setting avoids. These threads are joined before the call returns, so a later fork
    (a data loader's workers, a subprocess) finds none running.

    With ``process`` (the default) and enough texts the counting runs in a child interpreter with the same
    backend (its JSON; if the child fails, here instead): Python code running meanwhile in this process (the
    validation's checks) then shares no GIL with the counting threads, which otherwise wait for it between
    chunks while pandas holds it."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    workers = counting_threads() if threads is None else max(1, threads)

    def count(texts: list[str]) -> list[int]:
        if backend is None:  # a slow tokenizer holds the GIL: threads would gain nothing
            return [len(ids) for start in range(0, len(texts), TOKEN_COUNT_CHUNK)
                    for ids in tokenizer([str(t) for t in texts[start:start + TOKEN_COUNT_CHUNK]],
                                         add_special_tokens=False)["input_ids"]]
        if process and len(texts) >= PROCESS_MIN_TEXTS:
            counted = _count_in_child(backend, texts, workers)
            if counted is not None:
                return counted
        return _chunk_counts(backend, texts, workers)

    return count


PROCESS_MIN_TEXTS = 50_000  # below this, starting a child costs more than sharing the GIL


def load_base(base_dir: Path, quantize_4bit: bool = False, trust_remote_code: bool | None = None) -> Any:
    """Load the materialised base model; ``quantize_4bit`` gives the QLoRA NF4 base. ``trust_remote_code``
    None (every stage's call) means as ``model.trust_remote_code`` said when the base_model stage wrote it."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if not (base_dir / "config.json").is_file():
        raise ModelError(f"{base_dir}: no base model here; run the base_model stage first")
    trust = recorded_trust(base_dir) if trust_remote_code is None else trust_remote_code
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": trust}
    # Each process of a multi-GPU launch loads its own copy onto its own GPU ("cuda" alone means the current one).
    target = f"cuda:{local_rank()}" if device() == "cuda" else device()
    if quantize_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype())
        kwargs["dtype"] = compute_dtype()
        kwargs["device_map"] = {"": target}
    else:
        kwargs["dtype"] = compute_dtype() if device() == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    if quantize_4bit:
        _own_unquantized_tensors(model)
    else:
        model.to(target)
    return model


def _own_unquantized_tensors(model: Any) -> None:
    """Copy the tensors quantisation left in full precision (embeddings, norms) out of the weights file.

    Loaded from safetensors they are views into the file's memory map, and one live view keeps the whole
    mapping: quantising reads every page of the file, so the process went on holding all of it (about
    0.4 GB of RSS for the 0.5 GB SmolLM2-135M file, more than the 4-bit model itself). Own copies let the
    mapping go (tests/model/test_memory.py)."""
    import torch

    seen: set[int] = set()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if id(tensor) in seen or type(tensor).__name__ == "Params4bit" or tensor.device.type != "cpu":
                continue
            seen.add(id(tensor))
            tensor.data = tensor.data.clone()


def lora_config(params: LoraParams) -> Any:
    from peft import LoraConfig

    if isinstance(params.target_modules, list):
        targets: Any = params.target_modules
    elif params.target_modules == "all-linear":
        targets = "all-linear"
    else:
        targets = TARGET_MODULES[params.target_modules]
    return LoraConfig(r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM", use_rslora=params.use_rslora)


def load_for_inference(base_dir: Path, adapter_dir: Path | None = None) -> tuple[Any, Any]:
    """The base model, with the adapter applied when given; ``adapter_dir=None`` means the base model."""
    from peft import PeftModel

    model = load_base(base_dir)
    if adapter_dir is not None:
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelError(f"{adapter_dir}: no adapter_config.json; run the train stage first")
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    model.eval()
    return model, load_tokenizer(base_dir, padding_side="left")


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total); 4-bit weights count as their logical size, not their packed storage."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if hasattr(param, "quant_state"):
            n *= 2  # Params4bit packs two 4-bit values per uint8 element
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def safetensors_bytes(folder: Path) -> int:
    """Bytes of the safetensors weights in a model or adapter folder."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))
