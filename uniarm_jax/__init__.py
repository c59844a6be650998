"""uniarm_jax: UniARM, GenARM and PARM autoregressive reward models in JAX/Flax."""

from uniarm_jax.config import LlamaConfig
from uniarm_jax.errors import CheckpointError, ConfigError
from uniarm_jax.pretrained import ModelHandle, load_pretrained, load_tokenizer, logits, save_pretrained

__all__ = ["LlamaConfig", "ConfigError", "CheckpointError", "ModelHandle", "load_pretrained",
           "load_tokenizer", "logits", "save_pretrained"]
