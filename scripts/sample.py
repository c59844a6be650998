"""Generate from a base model: `uniarm generate` (guided decoding with ARMs comes with `uniarm sample`)."""

import sys

from uniarm_jax.commands.main import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
