"""Guided decoding: the base and its ARMs in one compiled rollout, combined under α.

The entry points most callers need are re-exported here.
"""

from uniarm_jax.decode.generate import generate, generate_ids, generate_in_chunks
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.decode.sampling import Sampler

__all__ = ["Sampler", "guided_generate", "generate_in_chunks", "generate", "generate_ids"]
