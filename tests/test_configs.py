"""Every shipped experiment config loads and builds its adapter and objective."""

import glob
import os

import pytest

from uniarm_jax.errors import ConfigError
from uniarm_jax.train.config import load_run_config

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds(path):
    config = load_run_config(path)
    k = len(config.objective.betas)
    adapter, objective = config.adapter_for(k), config.objective_for(k)
    assert adapter.kind in {"genarm": ("lora",), "parm": ("pblora",), "uniarm": ("moslora",)}[objective.method]


def test_paper_settings_are_the_reference_ones():
    parm = load_run_config(os.path.join(os.path.dirname(__file__), "..", "configs", "parm_pku.yaml"))
    assert (parm.optim.learning_rate, parm.optim.warmup_steps, parm.optim.weight_decay,
            parm.optim.batch_size, parm.optim.epochs) == (5e-4, 20, 0.05, 32, 2)
    assert (parm.adapter.rank, parm.adapter.rank_shared, parm.adapter.lora_alpha) == (8, 4, 8)
    assert (parm.data.max_prompt_tokens, parm.data.max_total_tokens) == (512, 1024)


def test_unknown_section_and_bad_override_are_refused():
    with pytest.raises(ConfigError, match=r"unknown section 'optimizer' \(did you mean 'optim'\?\)"):
        load_run_config(None, ["optimizer.learning_rate=1"])
    with pytest.raises(ConfigError, match="is not of the form section.key=value"):
        load_run_config(None, ["learning_rate=1"])
