"""The ARMs that guide a base, loaded from their directories: adapter directories (this project's, or
PEFT LoRA directories), each on the base it was trained on, or plain Hugging Face directories (fully
fine-tuned ARMs). Shared by `uniarm sample`, `uniarm evaluate` and the demo.

An adapter's base is found by what the adapter records: the decoding base when it is that model
(its weights are then shared), else `arm_base` (`--arm-base DIR`: a moved base, or the local copy of
a PEFT adapter's hub base), else the path the adapter was trained at; a weak ARM (weak-to-strong) gets
its small base loaded. Every model loaded here (a weak ARM's base, a full ARM) is quantized as the
decoding base is (`quantize`).
"""

from __future__ import annotations

import os

from uniarm_jax.errors import CheckpointError, ConfigError, MissingFileError
from uniarm_jax.hf.adapter_files import ADAPTER_FORMAT, find_base, load_adapter, read_adapter
from uniarm_jax.hf.fingerprint import fingerprint
from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer


def _same_dir(a: str | None, b: str) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def _same_model(hf_dir: str, base) -> bool:
    return _same_dir(hf_dir, base.path) or fingerprint(hf_dir) == fingerprint(base.path, base.config)


def load_arm(path: str, base, dtype: str, mesh=None, arm_base: str | None = None):
    """An ARM handle from `path` and the directory of its base: an adapter directory (on the base it
    was trained on, see the module's docstring) or a plain Hugging Face directory."""
    if not os.path.isdir(path):
        raise MissingFileError(f"ARM {path!r} does not exist")
    if arm_base is not None and not os.path.isdir(arm_base):
        raise MissingFileError(f"--arm-base {arm_base!r} does not exist")
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        record = read_adapter(path)
        on_base = base.path if record.format == ADAPTER_FORMAT else None  # the others record no fingerprint
        arm_base_dir = find_base(record, [on_base, arm_base, record.base_hint])
        arm_base_model = base if _same_model(arm_base_dir, base) else \
            load_pretrained(arm_base_dir, dtype=dtype, mesh=mesh, quantize=base.config.quantize)
        return load_adapter(arm_base_model, path), arm_base_dir
    if os.path.isfile(os.path.join(path, "config.json")):
        return load_pretrained(path, dtype=dtype, mesh=mesh, quantize=base.config.quantize), path
    raise CheckpointError(f"ARM {path!r} is neither an adapter directory (adapter_config.json) nor a Hugging "
                          "Face model directory (config.json)")


def same_tokenizer_files(a: str, b: str) -> bool:
    """Both directories hold a byte-identical `tokenizer.json`: one tokenizer, nothing to load to know
    it (a truncated or fine-tuned ARM usually carries its base's file)."""
    files = [os.path.join(d, "tokenizer.json") for d in (a, b)]
    if not all(os.path.isfile(f) for f in files) or os.path.getsize(files[0]) != os.path.getsize(files[1]):
        return False
    with open(files[0], "rb") as fa, open(files[1], "rb") as fb:
        return fa.read() == fb.read()


def check_tokenizers_agree(base_tok, arm_tok, arm_dir: str) -> None:
    """Every base token must have the same id in the ARM's vocabulary (the ARM may have extra tokens)."""
    arm_vocab = arm_tok.get_vocab()
    for token, idx in base_tok.get_vocab().items():
        if arm_vocab.get(token) != idx:
            raise ConfigError(f"the tokenizer of ARM {arm_dir!r} disagrees with the base's: token {token!r} is id "
                              f"{idx} in the base and {arm_vocab.get(token)} in the ARM; guidance needs one tokenizer")


def load_guides(paths: list[str], weights, base, tokenizer, dtype: str, mesh=None,
                arm_base: str | None = None) -> tuple[list, list[float]]:
    """The ARM handles of `paths` (see `load_arm`), each checked to share the base's tokenizer, and
    one weight per ARM (default 1)."""
    weights = list(weights) if weights else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ConfigError(f"{len(weights)} ARM weights for {len(paths)} ARMs; give one weight per ARM")
    arms = []
    for path in paths:
        arm, arm_base_dir = load_arm(path, base, dtype, mesh, arm_base)
        if not _same_dir(arm_base_dir, base.path) and not same_tokenizer_files(base.path, arm_base_dir):
            check_tokenizers_agree(tokenizer, load_tokenizer(arm_base_dir), path)
        arms.append(arm)
    return arms, weights
