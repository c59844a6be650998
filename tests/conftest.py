"""Shared fixtures. Eight fake CPU devices exist for the sharding tests (set before jax is imported);
parity is checked in float32 at the highest matmul precision."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# nothing may reach a hub: a PEFT config naming a hub id made peft look the id up (and ignore the failure)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the `uniarm` command keeps compiled programs in a persistent cache: the suite keeps its own
os.environ.setdefault("UNIARM_COMPILE_CACHE", tempfile.mkdtemp(prefix="uniarm_compiled_"))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from tests.tiny_models import FAMILIES, make_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A small random Llama (GQA ratio 2, untied, no rope scaling) saved by transformers."""
    path = tmp_path_factory.mktemp("tiny")
    make_tiny_llama(path)
    return str(path)


@pytest.fixture(scope="session", params=list(FAMILIES))
def family_dir(request, tmp_path_factory):
    """A small random model of each Llama-family architecture (tests/tiny_models.py), saved by its
    transformers class: the tests that take it run once per family."""
    path = tmp_path_factory.mktemp(request.param)
    make_tiny_llama(path, **FAMILIES[request.param])
    return str(path)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The real SmolLM2-135M-Instruct (built once from the PyPI wheel, then cached)."""
    from uniarm_jax.hf.smollm2 import prepare_smollm2

    return prepare_smollm2()
