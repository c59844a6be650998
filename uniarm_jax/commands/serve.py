"""`uniarm serve`: an OpenAI-compatible server where every request brings its own preference vector.

Loads the base and the ARMs as `uniarm sample` does (the same kinds and rules: one conditioned ARM
for UniARM / PARM, k plain ARMs for GenARM, or the base alone), checks the settings before anything
compiles, then serves `uniarm_jax.serve` with uvicorn until interrupted.
"""

from __future__ import annotations

from uniarm_jax import defaults
from uniarm_jax.commands import options


def build_server(args):
    """The service (models, slots, scheduler; not started) and the uvicorn server for `args`."""
    import uvicorn

    from uniarm_jax.decode.guides import load_guides
    from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer
    from uniarm_jax.model.preferences import parse_pref
    from uniarm_jax.model.sharding import parse_mesh
    from uniarm_jax.serve.api import make_app
    from uniarm_jax.serve.service import ServeOptions, Service

    opts = ServeOptions(slots=args.slots, max_queue=args.max_queue, max_new_tokens=args.max_new_tokens,
                        max_prompt_tokens=args.max_prompt_tokens, template=args.template,
                        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                        base_weight=args.base_weight,
                        default_preference=parse_pref(args.default_preference) if args.default_preference else None)
    options.sampler(args)  # refuses a bad --temperature / --top-k / --top-p before loading
    mesh = parse_mesh(args.mesh) if args.mesh else None
    base = load_pretrained(args.base, dtype=args.dtype, mesh=mesh, quantize=args.quantize)
    tokenizer = load_tokenizer(args.base)
    arms, arm_weights = load_guides(args.arm or [], args.arm_weight, base, tokenizer, args.dtype, mesh,
                                    args.arm_base)
    service = Service(base, tokenizer, arms, args.arm or [], arm_weights, opts)
    config = uvicorn.Config(make_app(service), host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=5)
    return service, uvicorn.Server(config)


def serve(args, log=print) -> None:
    service, server = build_server(args)
    log(f"compiling the decode step for {args.slots} slots ...")
    service.start()
    models = ", ".join(m["id"] for m in service.models())
    log(f"serving {models} on http://{args.host}:{args.port} (playground at /, OpenAI API at /v1)")
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again
        log("stopped")
    finally:
        service.stop()


def register(sub) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible server: each request brings its own preference vector")
    p.add_argument("--base", required=True, help="Hugging Face directory of the frozen base")
    p.add_argument("--arm", action="append", help="an adapter directory of this project or a Hugging Face "
                   "directory (a fully fine-tuned ARM); repeat for GenARM's one ARM per objective")
    p.add_argument("--arm-weight", action="append", type=float, help="one per --arm (default 1)")
    options.add_arm_base(p)
    p.add_argument("--base-weight", type=float, default=1.0, help="0 samples from the ARM alone")
    p.add_argument("--default-preference", default=None,
                   help="a,b,...: the α of requests that bring none (default: uniform)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--mesh", default=None, help="data,fsdp,tensor: shard the base and the ARMs over the devices")
    p.add_argument("--slots", type=int, default=8, help="requests decoded together (the compiled step's batch)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot; more are answered 429")
    options.add_generation(p)
    options.add_quantize(p)
    p.add_argument("--max-prompt-tokens", type=int, default=defaults.MAX_PROMPT_TOKENS,
                   help="BOS included; a longer prompt is refused (400)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=serve)
