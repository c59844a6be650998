"""Installs the `uniarm_jax` package and the `uniarm` command."""

import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "requirements.txt")) as f:
    requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]

setup(
    name="uniarm_jax",
    version="0.1.0",
    description="UniARM, GenARM and PARM autoregressive reward models for test-time alignment, in JAX/Flax",
    packages=find_packages(include=["uniarm_jax", "uniarm_jax.*"]),
    package_data={"uniarm_jax.serve": ["static/*"]},  # the playground page
    python_requires=">=3.11",
    install_requires=requirements,
    entry_points={"console_scripts": ["uniarm = uniarm_jax.commands.main:main"]},
)
