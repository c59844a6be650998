"""Numbers that several parts of the project share, each written once here (docs/methods.md says why)."""

import os

# The repository beside the package: the small task's data and the demo's adapter ship there.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_root() -> str:
    """Where the project keeps what it builds once per machine (SmolLM2, compiled programs):
    `$UNIARM_CACHE`, else `~/.cache/uniarm_jax`."""
    return os.environ.get("UNIARM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "uniarm_jax")

# Tokenisation as the reference code: BOS + the prompt's last tokens, at most 512 with BOS; prompt +
# response + EOS at most 1024 (docs/methods.md §5).
MAX_PROMPT_TOKENS = 512
MAX_TOTAL_TOKENS = 1024

# Adapters as GenARM's reference LoRA: rank 8 on q, k, v, dropout 0.05 (docs/methods.md §1-3).
ADAPTER_RANK = 8
ADAPTER_TARGETS = ("q_proj", "k_proj", "v_proj")
ADAPTER_DROPOUT = 0.05

# The Bradley-Terry β of each objective's ARM loss (PARM's reference, docs/methods.md §2).
BETA = 0.01

# Decoding, when a command or config is not told otherwise: greedy, as PARM's reference.
MAX_NEW_TOKENS = 128
TEMPERATURE = 0.0   # 0 is greedy
TOP_K = 0           # 0: no top-k cut
TOP_P = 1.0         # 1: no nucleus cut
TEMPLATE = "chat"   # the tokenizer's own chat template
DTYPE = "float32"

