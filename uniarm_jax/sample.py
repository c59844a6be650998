"""`uniarm sample`: guided generation from files, for one preference or a whole grid in one call.

Reads prompts (`{"prompt": ...}` per line), loads the base and the ARMs (this project's adapter
directories, or plain Hugging Face directories such as a fully fine-tuned ARM), checks everything that
can be checked before compiling (preferences, tokenizers, prompt lengths, ARM files), then runs every
(prompt, preference) row through `decode.guided_generate` in batches.
"""

from __future__ import annotations

import json
import os

from uniarm_jax.arm import load_adapter, read_adapter_config
from uniarm_jax.decode import Sampler, conditioned_arms, generate_in_chunks, num_objectives
from uniarm_jax.errors import CheckpointError, ConfigError, DataError
from uniarm_jax.pretrained import load_pretrained, load_tokenizer
from uniarm_jax.tokenization import TokenizeConfig, encode_prompt


def read_prompts(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompts file {path!r} does not exist")
    prompts = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {line_no} is not valid JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise DataError(f"{path} line {line_no} has no string field 'prompt'; expected {{\"prompt\": ...}}")
            prompts.append(row["prompt"])
    if not prompts:
        raise DataError(f"{path} holds no prompts")
    return prompts


def _same_dir(a: str | None, b: str) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def load_arm(path: str, base, dtype: str, mesh=None):
    """An ARM handle from `path`: an adapter directory (on the base it was trained on; the decoding
    base's weights are shared when it is the same model) or a plain Hugging Face directory."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"ARM {path!r} does not exist")
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
        if not _same_dir(arm_base_dir, base.path):
            check_tokenizers_agree(tokenizer, load_tokenizer(arm_base_dir), path)
        arms.append(arm)
    return arms, weights


def sample(args, log=print) -> dict:
    """Runs `uniarm sample` with parsed arguments; writes `args.out` and returns a summary."""
    from tqdm import tqdm

    from uniarm_jax.preferences import check_pref, parse_pref

    sampler = Sampler(args.temperature, args.top_k, args.top_p)
    prompts = read_prompts(args.prompts)
    prefs = [parse_pref(p) for p in args.pref] if args.pref else [None]
    mesh = None
    if args.mesh:
        from uniarm_jax.sharding import make_mesh

        try:
            data, fsdp, tensor = (int(v) for v in args.mesh.split(","))
        except ValueError:
            raise ConfigError(f"--mesh {args.mesh!r} is not three integers data,fsdp,tensor (e.g. 1,1,8)") from None
        mesh = make_mesh(data, fsdp, tensor)
    base = load_pretrained(args.base, dtype=args.dtype, mesh=mesh)
    tokenizer = load_tokenizer(args.base)
    arms, arm_weights = load_guides(args.arm or [], args.arm_weight, base, tokenizer, args.dtype, mesh)
    k = num_objectives(arms)
    if prefs != [None]:
        for p in prefs:
            check_pref(p, k)
    elif conditioned := conditioned_arms(arms):
        raise ConfigError(f"the {conditioned[0].adapter_config.kind} ARM needs --pref with {k} weights, e.g. "
                          f"--pref {','.join(['%.2g' % (1 / k)] * k)}")

    tcfg = TokenizeConfig(template=args.template, max_prompt_tokens=args.max_prompt_tokens,
                          max_total_tokens=args.max_prompt_tokens + args.max_new_tokens)
    encoded, truncated = [], 0
    for i, prompt in enumerate(prompts):
        ids, length, cut = encode_prompt(tokenizer, prompt, tcfg)
        if cut and not args.truncate_prompts:
            raise ConfigError(f"prompt {i + 1} of {args.prompts} has {length} tokens, more than --max-prompt-tokens="
                              f"{args.max_prompt_tokens}; raise the limit or pass --truncate-prompts to keep its "
                              "last tokens")
        truncated += cut
        encoded.append(ids)
    if truncated:
        log(f"{truncated} prompts longer than {args.max_prompt_tokens} tokens kept only their last tokens")

    rows = [(p, ids, pref) for pref in prefs for p, ids in zip(prompts, encoded)]
    out_rows, generated, seconds = [], 0, 0.0
    with open(args.out, "w") as out, tqdm(total=len(rows), desc="sample", disable=not args.progress) as bar:
        chunks = generate_in_chunks(base, arms, [r[1] for r in rows], args.max_new_tokens,
                                    prefs=None if prefs == [None] else [r[2] for r in rows],
                                    chunk_size=args.batch_size, seed=args.seed, arm_weights=arm_weights or None,
                                    base_weight=args.base_weight, sampler=sampler, pad_id=tokenizer.pad_token_id)
        for start, tokens, elapsed in chunks:
            if start:  # the first batch pays the compilation
                seconds += elapsed
                generated += sum(len(t) for t in tokens)
            for (prompt, ids, p), toks in zip(rows[start:], tokens):
                row = {"prompt": prompt, "pref": p, "prompt_token_ids": ids, "token_ids": toks,
                       "text": tokenizer.decode(toks, skip_special_tokens=True)}
                out.write(json.dumps(row) + "\n")
                out_rows.append(row)
            bar.update(len(tokens))
    rate = generated / seconds if seconds else float("nan")
    log(f"{len(out_rows)} responses to {args.out}; {rate:.1f} tokens/s after the first (compiling) batch")
    return {"rows": len(out_rows), "tokens_per_s": rate}
