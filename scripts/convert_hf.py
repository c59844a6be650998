"""Load a Hugging Face Llama directory and write it back (e.g. cast to bf16): `uniarm convert`."""

import sys

from uniarm_jax.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
