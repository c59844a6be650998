"""uniarm_jax: UniARM, GenARM and PARM autoregressive reward models in JAX/Flax.

The public API for a model: load a Hugging Face directory, run it, write it back. The rest lives in
subpackages by concern: `model`, `hf`, `data`, `train`, `decode`, `eval`, `commands` (docs/design.md).
"""

from uniarm_jax.errors import CheckpointError, ConfigError, DataError, UniarmError
from uniarm_jax.hf.pretrained import load_pretrained, load_tokenizer, save_pretrained
from uniarm_jax.model.config import LlamaConfig
from uniarm_jax.model.handle import ModelHandle, logits

__all__ = ["LlamaConfig", "UniarmError", "ConfigError", "CheckpointError", "DataError", "ModelHandle",
           "load_pretrained", "load_tokenizer", "logits", "save_pretrained"]
