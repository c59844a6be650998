"""The ARMs that guide a base, loaded from their directories: this project's adapter directories (on
the base each was trained on: the decoding base's weights are shared when it is the same model, else
the small base is loaded, weak-to-strong) or plain Hugging Face directories (fully fine-tuned ARMs).
Shared by `uniarm sample`, `uniarm evaluate` and the demo."""

from __future__ import annotations

import os

from uniarm_jax.errors import CheckpointError, ConfigError, MissingFileError
from uniarm_jax.hf.adapter_files import load_adapter, read_adapter_config
from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer


def _same_dir(a: str | None, b: str) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def load_arm(path: str, base, dtype: str, mesh=None):
    """An ARM handle from `path`: an adapter directory (on the base it was trained on; the decoding
    base's weights are shared when it is the same model) or a plain Hugging Face directory."""
    if not os.path.isdir(path):
        raise MissingFileError(f"ARM {path!r} does not exist")
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        meta = read_adapter_config(path)
        arm_base_dir = meta.get("base_path")
        if _same_dir(arm_base_dir, base.path):
            return load_adapter(base, path), base.path
        if not arm_base_dir or not os.path.isdir(arm_base_dir):
            raise CheckpointError(f"ARM {path!r} was trained on base {arm_base_dir!r}, which is not here; "
                                  "its adapter needs that base model")
        return load_adapter(load_pretrained(arm_base_dir, dtype=dtype, mesh=mesh), path), arm_base_dir
    if os.path.isfile(os.path.join(path, "config.json")):
        return load_pretrained(path, dtype=dtype, mesh=mesh), path
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


def load_guides(paths: list[str], weights, base, tokenizer, dtype: str, mesh=None) -> tuple[list, list[float]]:
    """The ARM handles of `paths` (see `load_arm`), each checked to share the base's tokenizer, and
    one weight per ARM (default 1)."""
    weights = list(weights) if weights else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ConfigError(f"{len(weights)} ARM weights for {len(paths)} ARMs; give one weight per ARM")
    arms = []
    for path in paths:
        arm, arm_base_dir = load_arm(path, base, dtype, mesh)
        if not _same_dir(arm_base_dir, base.path) and not same_tokenizer_files(base.path, arm_base_dir):
            check_tokenizers_agree(tokenizer, load_tokenizer(arm_base_dir), path)
        arms.append(arm)
    return arms, weights
