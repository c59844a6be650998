"""`uniarm ...` run in the test's own process through the command's entry point (no new interpreter,
so it costs no start-up and shares the JAX compilation cache)."""

import contextlib
import dataclasses
import io

from uniarm_jax.commands.main import main


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_uniarm(*args) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*map(str, args)])
    return Result(code, out.getvalue(), err.getvalue())
