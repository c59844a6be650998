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


STUDY = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "study", "*.yaml")))


@pytest.mark.parametrize("path", STUDY, ids=os.path.basename)
def test_study_config_builds_on_its_data(path):
    """The study's configs (scripts/study.py) train on the committed data: one β per objective named,
    every objective in the pairs file (the ablations pair adapters and losses on purpose)."""
    from uniarm_jax.data.pairs import load_preferences

    config = load_run_config(path)
    k = len(config.data.objectives)
    config.adapter_for(k), config.objective_for(k)
    for part in (config.data.train, config.data.dev):
        assert list(load_preferences(part, "multi", config.data.objectives).objectives) == list(config.data.objectives)


def test_study_evaluation_configs_load_and_name_the_data_objectives(tmp_path, monkeypatch):
    """What scripts/study.py writes for `uniarm evaluate` is a valid config whose scorers carry the
    objective names the ARMs learnt from the data (sentiment is VADER's)."""
    import importlib.util

    from uniarm_jax.eval.evaluate import load_eval_config
    from uniarm_jax.eval.scoring import make_scorer, scorer_specs

    scripts = os.path.join(os.path.dirname(__file__), "..", "scripts")
    monkeypatch.syspath_prepend(scripts)  # as when it runs: its helpers beside it
    spec = importlib.util.spec_from_file_location("study", os.path.join(scripts, "study.py"))
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    monkeypatch.setattr(study, "base_dir", lambda: str(tmp_path / "base"))
    for name, (_, objectives, methods) in study.EXPERIMENTS.items():
        arms = {m: {"arms": study.arms(name, m)} for m in methods}
        config = load_eval_config(study.eval_config(name, "data/study/test_prompts.jsonl", str(tmp_path / name), arms))
        kinds = [s["kind"] for s in scorer_specs(config.objectives)]
        assert kinds == [{"sentiment": "vader"}.get(o, o) for o in objectives]
        assert [make_scorer(s).name for s in scorer_specs(config.objectives) if s["kind"] != "relevance"] == \
            [o for o in objectives if o != "relevance"]  # relevance's model is not loaded here
        assert all(a in methods or a == "base" for pair in config.compare for a in pair) and config.compare
    sweep = load_eval_config(study.eval_config("k2_same_size", "data/study/dev_prompts.jsonl", str(tmp_path / "sweep"),
                                               {"genarm": {"arms": study.arms("k2_same_size", "genarm")}},
                                               prefs=[[1.0, 0.0]]))  # anchor_sweep's: one α instead of the grid
    assert [list(p) for p in sweep.prefs] == [[1.0, 0.0]]
