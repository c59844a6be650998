"""`uniarm sample`: guided generation from files, for one preference or a whole grid in one call.

Reads prompts (`{"prompt": ...}` per line), loads the base and the ARMs (adapter directories, this
project's or PEFT LoRA ones, or plain Hugging Face directories such as a fully fine-tuned ARM), checks everything that
can be checked before compiling (preferences, tokenizers, prompt lengths, ARM files), then runs every
(prompt, preference) row through `decode.guided_generate` in batches.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from uniarm_jax import defaults
from uniarm_jax.commands import options
from uniarm_jax.compilation import compile_seconds
from uniarm_jax.errors import ConfigError


def sample(args, log=print) -> dict:
    """Runs `uniarm sample` with parsed arguments; writes `args.out` and returns a summary."""
    from tqdm import tqdm

    from uniarm_jax.data.prompts import read_prompts
    from uniarm_jax.decode.generate import generate_in_chunks
    from uniarm_jax.decode.guides import load_guides
    from uniarm_jax.decode.rollout import conditioned_arms, num_objectives
    from uniarm_jax.hf.pretrained import load_pretrained
    from uniarm_jax.model.preferences import check_pref, parse_pref
    from uniarm_jax.model.sharding import parse_mesh

    sampler = options.sampler(args)
    prompts = read_prompts(args.prompts)
    prefs = [parse_pref(p) for p in args.pref] if args.pref else [None]
    mesh = parse_mesh(args.mesh) if args.mesh else None
    # the prompts are encoded on a second thread while the weights load: rendering the chat template
    # imports transformers' renderer (0.6-0.8 s of pure Python on the 2-core CPU), the load is mostly
    # page faults and copies outside the GIL, so the two overlap (bench/decode.py's whole process)
    with ThreadPoolExecutor(1) as pool:
        encoding = pool.submit(_encode_prompts, args, prompts, log)
        base = load_pretrained(args.base, dtype=args.dtype, mesh=mesh, quantize=args.quantize)
        tokenizer, encoded = encoding.result()
    arms, arm_weights = load_guides(args.arm or [], args.arm_weight, base, tokenizer, args.dtype, mesh,
                                    args.arm_base)
    k = num_objectives(arms)
    if prefs != [None]:
        for p in prefs:
            check_pref(p, k)
    elif conditioned := conditioned_arms(arms):
        raise ConfigError(f"the {conditioned[0].adapter_config.kind} ARM needs --pref with {k} weights, e.g. "
                          f"--pref {','.join(['%.2g' % (1 / k)] * k)}")

    rows = [(p, ids, pref) for pref in prefs for p, ids in zip(prompts, encoded)]
    out_rows, generated, seconds, compiled = [], 0, 0.0, compile_seconds()
    with open(args.out, "w") as out, tqdm(total=len(rows), desc="sample", disable=not args.progress) as bar:
        chunks = generate_in_chunks(base, arms, [r[1] for r in rows], args.max_new_tokens,
                                    prefs=None if prefs == [None] else [r[2] for r in rows],
                                    chunk_size=args.batch_size, seed=args.seed, arm_weights=arm_weights or None,
                                    base_weight=args.base_weight, sampler=sampler, pad_id=tokenizer.pad_token_id)
        for start, tokens, elapsed in chunks:
            seconds += elapsed
            generated += sum(len(t) for t in tokens)
            for (prompt, ids, p), toks in zip(rows[start:], tokens):
                row = {"prompt": prompt, "pref": p, "prompt_token_ids": ids, "token_ids": toks,
                       "text": tokenizer.decode(toks, skip_special_tokens=True)}
                out.write(json.dumps(row) + "\n")
                out_rows.append(row)
            bar.update(len(tokens))
    compiled = compile_seconds() - compiled
    summary = {"rows": len(out_rows), "tokens": generated, "seconds": seconds, "compile_seconds": compiled,
               "tokens_per_s": generated / seconds,  # generation always takes some time
               "tokens_per_s_without_compile": generated / max(seconds - compiled, 1e-9)}
    log(f"{len(out_rows)} responses to {args.out}: {generated} tokens in {seconds:.1f} s, "
        f"{summary['tokens_per_s']:.1f} tokens/s with compilation ({compiled:.1f} s of it), "
        f"{summary['tokens_per_s_without_compile']:.1f} tokens/s without")
    return summary


def _encode_prompts(args, prompts: list[str], log) -> tuple:
    """The tokenizer and each prompt's ids as the model reads them (chat template, length limit)."""
    from uniarm_jax.data.tokenization import TokenizeConfig, encode_prompt
    from uniarm_jax.hf.pretrained import load_tokenizer

    tokenizer = load_tokenizer(args.base)
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
    return tokenizer, encoded


def register(sub) -> None:
    p = sub.add_parser("sample", help="guided generation: base + ARM(s) under preference vectors")
    p.add_argument("--base", required=True, help="Hugging Face directory of the frozen base")
    p.add_argument("--arm", action="append", help="an adapter directory (this project's or a PEFT LoRA one) or a "
                   "Hugging Face directory (a fully fine-tuned ARM); repeat for GenARM's one ARM per objective")
    options.add_arm_base(p)
    p.add_argument("--arm-weight", action="append", type=float, help="one per --arm (default 1)")
    p.add_argument("--base-weight", type=float, default=1.0, help="0 samples from the ARM alone")
    p.add_argument("--pref", action="append", help="a preference vector a,b,...; repeat to sweep a grid")
    p.add_argument("--prompts", required=True, help='JSON lines {"prompt": ...}')
    p.add_argument("--out", required=True, help="JSON lines: prompt, pref, prompt_token_ids, token_ids, text")
    options.add_generation(p)
    options.add_quantize(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-prompt-tokens", type=int, default=defaults.MAX_PROMPT_TOKENS,
                   help="BOS included; a longer prompt is refused unless --truncate-prompts")
    p.add_argument("--truncate-prompts", action="store_true", help="keep the last tokens of longer prompts")
    p.add_argument("--mesh", default=None, help="data,fsdp,tensor, e.g. 1,1,8: shard the base and the ARMs "
                   "(each by its own shapes) over the devices; a big base goes over the tensor axis")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=sample)
