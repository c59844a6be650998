"""A tiny guided server for the serve tests: a random word-level Llama with a chat template, a UniARM
(MoSLoRA) adapter on it whose α visibly changes greedy outputs, and `uniarm serve` on loopback."""

import contextlib
import socket
import threading
import time

import uniarm_jax
from tests.synthetic import vocabulary
from tests.test_adapters import randomise
from tests.test_decode import strong_modulation
from tests.tiny_models import make_tiny_llama, make_word_tokenizer
from uniarm_jax.commands.main import build_parser
from uniarm_jax.commands.serve import build_server
from uniarm_jax.compilation import enable_persistent_cache
from uniarm_jax.hf.adapter_files import save_adapter
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")
# the server's limits for the tiny model (128 positions): prompts of up to 32 tokens (two buckets), up to 96
# new tokens
LIMITS = ["--max-prompt-tokens", "32", "--max-new-tokens", "96"]


def make_models(root) -> dict:
    """The base (no EOS in its config, so every response runs to max_tokens) and its UniARM."""
    tokenizer = make_word_tokenizer(root / "base", vocabulary() + ["user", "assistant", "system", ":"])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(root / "base")
    make_tiny_llama(root / "base", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    base = uniarm_jax.load_pretrained(str(root / "base"))
    arm = strong_modulation(randomise(init_adapter(base, AdapterConfig(kind="moslora")), seed=1))
    save_adapter(arm, str(root / "uniarm"), objectives=["fruit", "berry"])
    return {"base": base, "arm": arm, "tokenizer": uniarm_jax.load_tokenizer(str(root / "base")),
            "base_dir": str(root / "base"), "arm_dir": str(root / "uniarm")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(*args):
    """`uniarm serve ARGS` (its own parser and build) on a free loopback port, in this process:
    yields (base URL, service); stops the server and its device loop afterwards."""
    enable_persistent_cache()  # as the `uniarm` command does: a second server loads its programs
    port = free_port()
    parsed = build_parser().parse_args(["serve", "--port", str(port), "--log-level", "warning", *map(str, args)])
    service, server = build_server(parsed)
    service.start()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        thread.join()
        service.stop()
