"""int8 weight-only bases against oracles: numpy's quantization of the float weights (per column and group
of 64 rows); the
float model whose kernels are the numpy-dequantized ones (full forward on every family, the train step),
the naive loop of full forwards (cached guided decoding), the unsharded int8 model (the sharded one);
the plumbing of `--quantize` / `quantize:` / `model.quantize`; and the refusals."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

import uniarm_jax
from tests.cli_runner import run_uniarm
from tests.synthetic import vocabulary, write_pairs
from tests.test_adapters import randomise
from tests.test_decode import PROMPTS, guided_models, naive_guided
from tests.test_train_step import CASES, pair_batch, run_steps
from tests.tiny_models import make_tiny_llama, make_tiny_word_llama
from uniarm_jax.decode.guides import load_guides
from uniarm_jax.decode.rollout import guided_generate
from uniarm_jax.errors import CheckpointError, ConfigError
from uniarm_jax.hf.adapter_files import save_adapter
from uniarm_jax.model.adapters import AdapterConfig
from uniarm_jax.model.arm import init_adapter, merge_adapter
from uniarm_jax.model.handle import truncate_layers
from uniarm_jax.model.projections import PROJECTIONS
from uniarm_jax.model.sharding import make_mesh


def numpy_int8(kernel):
    """Symmetric, per output column and group of 64 input rows (the whole column where 64 does not
    divide d_in): scale = max |w| over the group / 127 (float32), q = round(w / scale). Returns q
    `[..., d_in, d_out]`, the scales `[..., groups, d_out]` and the scales repeated over the rows."""
    k = np.asarray(kernel, np.float32)
    d_in = k.shape[-2]
    g = 64 if d_in % 64 == 0 else d_in
    q, scales = np.empty(k.shape, np.int8), []
    for start in range(0, d_in, g):
        block = k[..., start:start + g, :]
        amax = np.abs(block).max(axis=-2)
        scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
        q[..., start:start + g, :] = np.clip(np.rint(block / scale[..., None, :]), -127, 127)
        scales.append(scale)
    scales = np.stack(scales, axis=-2)
    return q, scales, np.repeat(scales, g, axis=-2)


def dequantized(float_handle):
    """The float model with every projection kernel replaced by numpy's `q * scale`."""
    params = jax.tree.map(np.asarray, float_handle.params)
    for p in PROJECTIONS:
        layer = params["layers"][p.group][p.name]
        q, _, per_row = numpy_int8(layer["kernel"])
        layer["kernel"] = q.astype(np.float32) * per_row
    return dataclasses.replace(float_handle, params=jax.tree.map(jax.numpy.asarray, params))


# wide enough for several groups of 64 rows: q/k/v/gate/up and o_proj 2 groups, down_proj 3
GROUPED = dict(hidden_size=128, intermediate_size=192, num_attention_heads=2, num_key_value_heads=2, head_dim=64)


@pytest.fixture(scope="module")
def grouped_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("grouped")
    make_tiny_llama(path, **GROUPED)
    return str(path)


def check_int8_tree(full, q8, groups=None):
    """Every projection's int8 kernel and scales are numpy's exactly (scales `[layers, groups, d_out]`);
    the embedding, head and norms are the float model's."""
    for p in PROJECTIONS:
        ours, kernel = q8.params["layers"][p.group][p.name], full.params["layers"][p.group][p.name]["kernel"]
        q, scale, _ = numpy_int8(kernel)
        assert ours["kernel_q"].dtype == np.int8 and ours["scale"].dtype == np.float32
        assert groups is None or ours["scale"].shape[1] == groups[p.name]
        np.testing.assert_array_equal(np.asarray(ours["kernel_q"]), q)
        np.testing.assert_array_equal(np.asarray(ours["scale"]), scale)
    rest = {k: v for k, v in full.params.items() if k != "layers"}
    for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves({k: q8.params[k] for k in rest})):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # embedding, head, final norm as they were


def left_padded(rng, lengths, width):
    ids, mask = np.zeros((len(lengths), width), np.int32), np.zeros((len(lengths), width), np.int32)
    for i, n in enumerate(lengths):
        ids[i, width - n:], mask[i, width - n:] = rng.randint(3, 96, n), 1
    return ids, mask


def test_int8_forward_equals_the_float_forward_on_numpy_dequantized_kernels(family_dir):
    """Per family (biases, q/k norms, Mistral's window, tied heads), left-padded: the kernels are numpy's
    quantization exactly, everything else is the float model's, and the logits are the float forward's
    over `q * scale` (float32, highest precision; ≤ 2e-5, while int8 moves them by ~1e-2)."""
    full, q8 = uniarm_jax.load_pretrained(family_dir), uniarm_jax.load_pretrained(family_dir, quantize="int8")
    check_int8_tree(full, q8)
    ids, mask = left_padded(np.random.RandomState(0), [13, 5, 9], 13)
    got = uniarm_jax.logits(q8, ids, mask)
    expected = uniarm_jax.logits(dequantized(full), ids, mask)
    real = mask.astype(bool)
    assert np.abs(got - expected)[real].max() <= 2e-5
    assert np.abs(got - uniarm_jax.logits(full, ids, mask))[real].max() > 1e-3  # the kernels are quantized


def test_int8_scales_per_group_of_64_rows_on_a_wider_model(grouped_dir):
    """Where 64 divides d_in each column has a scale per 64 rows (here 2 or 3): kernels and scales
    are numpy's, and the logits the float forward's over numpy's `q * scale` (≤ 2e-5)."""
    full, q8 = uniarm_jax.load_pretrained(grouped_dir), uniarm_jax.load_pretrained(grouped_dir, quantize="int8")
    check_int8_tree(full, q8, groups={p.name: 3 if p.name == "down_proj" else 2 for p in PROJECTIONS})
    ids, mask = left_padded(np.random.RandomState(2), [11, 4, 7], 11)
    real = mask.astype(bool)
    got = uniarm_jax.logits(q8, ids, mask)
    assert np.abs(got - uniarm_jax.logits(dequantized(full), ids, mask))[real].max() <= 2e-5
    assert np.abs(got - uniarm_jax.logits(full, ids, mask))[real].max() > 1e-3


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory):
    return guided_models(tmp_path_factory.mktemp("int8"), quantize="int8")


@pytest.mark.parametrize("case", ["uniarm", "weak-to-strong"])
def test_cached_guided_decoding_on_int8_models_equals_recomputed_full_forwards(int8_models, case):
    """The decode engine (per-layer int8 weights, KV cache) against the naive loop of full forwards
    (the layer scan) of the same int8 models: an ARM on the int8 base, and an int8 weak ARM."""
    base, guide = int8_models["base"], int8_models["uniarm" if case == "uniarm" else "weak"]
    ours, _ = guided_generate(base, [guide], PROMPTS, 6, pref=[0.3, 0.7])
    for prompt, got in zip(PROMPTS, ours):
        assert got == naive_guided(base, [guide], prompt, 6, [0.3, 0.7], [1.0])


def test_qlora_step_on_an_int8_base_equals_the_step_on_its_dequantized_float_base(tiny_dir):
    """Training an adapter on the int8 base, sharded 2x2x2, three steps (the first at learning rate 0):
    the losses and adapter weights of the same steps on the float base whose kernels are
    numpy-dequantized, on one device (≤ 1e-5). Every adapter weight moves; the int8 base stays bitwise
    as it was."""
    acfg, ocfg = CASES["uniarm-moslora"]
    q8 = uniarm_jax.load_pretrained(tiny_dir, quantize="int8")
    before = jax.tree.map(np.array, q8.params)
    batches = [pair_batch(seed=s) for s in range(3)]
    ours, losses = run_steps(q8, make_mesh(2, 2, 2), acfg, ocfg, batches, dropout=False)
    one_device = make_mesh(devices=jax.devices()[:1])
    oracle, expected = run_steps(dequantized(uniarm_jax.load_pretrained(tiny_dir)), one_device, acfg, ocfg, batches,
                                 dropout=False)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    start = init_adapter(q8, acfg, seed=1).adapter
    for a, b, s in zip(jax.tree.leaves(ours["adapter"]), jax.tree.leaves(oracle["adapter"]), jax.tree.leaves(start)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
        assert not np.array_equal(np.asarray(a), np.asarray(s))  # every adapter weight got a gradient
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(q8.params)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_sharded_int8_base_equals_unsharded_and_shards_like_its_kernels(grouped_dir):
    """Over 2x2x2 fake devices each shard is quantized from its own columns: the same values and
    logits as unsharded (≤ 5e-5); `kernel_q` shards like the float kernel, `scale` like it too (its
    groups as the rows: 2 groups over 2 devices where the rows are split)."""
    mesh = make_mesh(2, 2, 2)
    float_sharded = uniarm_jax.load_pretrained(grouped_dir, mesh=mesh)
    sharded = uniarm_jax.load_pretrained(grouped_dir, mesh=mesh, quantize="int8")
    single = uniarm_jax.load_pretrained(grouped_dir, quantize="int8")
    for p in PROJECTIONS:
        layer = sharded.params["layers"][p.group][p.name]
        spec = float_sharded.params["layers"][p.group][p.name]["kernel"].sharding.spec
        assert layer["kernel_q"].sharding.spec == spec
        groups = 3 if p.name == "down_proj" else 2  # 3 groups do not split over 2 devices: replicated
        assert tuple(layer["scale"].sharding.spec) == (spec[0], spec[1] if groups == 2 else None, spec[2])
        for leaf in ("kernel_q", "scale"):
            np.testing.assert_array_equal(np.asarray(layer[leaf]),
                                          np.asarray(single.params["layers"][p.group][p.name][leaf]))
    assert not sharded.params["layers"]["mlp"]["up_proj"]["kernel_q"].sharding.is_fully_replicated
    # logits up to ~9.5 summed in another order over the devices: the float model itself moves by
    # 1.1e-5 between these two placements, so 5e-5 is that rounding with margin, far below int8's 1e-2
    ids, mask = left_padded(np.random.RandomState(1), [8, 3, 8, 6], 8)
    np.testing.assert_allclose(uniarm_jax.logits(sharded, ids, mask), uniarm_jax.logits(single, ids, mask),
                               atol=5e-5)


@pytest.fixture(scope="module")
def word_models(tmp_path_factory):
    """A word-level base with a prompts file, a weak base (its first layer, same tokenizer) and an
    adapter saved on the weak base."""
    root = tmp_path_factory.mktemp("int8_words")
    make_tiny_word_llama(root / "base", vocabulary())
    base = uniarm_jax.load_pretrained(str(root / "base"))
    uniarm_jax.save_pretrained(truncate_layers(base, 1), str(root / "weak_base"))
    weak = uniarm_jax.load_pretrained(str(root / "weak_base"))
    save_adapter(randomise(init_adapter(weak, AdapterConfig(kind="moslora")), seed=3), str(root / "weak_arm"))
    with open(root / "prompts.jsonl", "w") as f:
        for p in ["Name some fruit.", "What is in the basket?"]:
            f.write(json.dumps({"prompt": p}) + "\n")
    return root


def test_a_weak_arms_base_and_a_full_arm_are_quantized_with_the_base(word_models):
    root = word_models
    base = uniarm_jax.load_pretrained(str(root / "base"), quantize="int8")
    tokenizer = uniarm_jax.load_tokenizer(str(root / "base"))
    (weak_arm, full_arm), _ = load_guides([str(root / "weak_arm"), str(root / "weak_base")], None, base, tokenizer,
                                          "float32")
    for arm in (weak_arm, full_arm):
        assert arm.config.quantize == "int8" and arm.config.num_hidden_layers == 1
        assert "kernel_q" in arm.params["layers"]["self_attn"]["q_proj"]
    expected = uniarm_jax.load_pretrained(str(root / "weak_base"), quantize="int8")
    np.testing.assert_array_equal(np.asarray(weak_arm.params["layers"]["mlp"]["down_proj"]["kernel_q"]),
                                  np.asarray(expected.params["layers"]["mlp"]["down_proj"]["kernel_q"]))


def test_sample_with_quantize_int8_decodes_the_int8_models(word_models, tmp_path):
    """`uniarm sample --quantize int8` with a weak ARM: the tokens of the library call on int8 models."""
    root, out = word_models, tmp_path / "out.jsonl"
    res = run_uniarm("sample", "--no-progress", "--base", root / "base", "--arm", root / "weak_arm",
                     "--pref", "0.4,0.6", "--prompts", root / "prompts.jsonl", "--out", out, "--max-new-tokens", 4,
                     "--template", "raw", "--quantize", "int8")
    assert res.returncode == 0, res.stderr
    base = uniarm_jax.load_pretrained(str(root / "base"), quantize="int8")
    tokenizer = uniarm_jax.load_tokenizer(str(root / "base"))
    (arm,), _ = load_guides([str(root / "weak_arm")], None, base, tokenizer, "float32")
    for row in map(json.loads, open(out)):
        expected, _ = guided_generate(base, [arm], [row["prompt_token_ids"]], 4, pref=row["pref"],
                                      pad_id=tokenizer.pad_token_id)
        assert row["token_ids"] == expected[0]


class Loaded(Exception):
    """Raised by a recording loader that stops the command once the base is loaded."""


def recording_loader(monkeypatch, module, stop: bool = False):
    """Replaces `module.load_pretrained` by one that records each call's `quantize`, loads as asked,
    and (`stop`) ends the command there."""
    seen = []
    real = module.load_pretrained

    def load(*args, **kwargs):
        seen.append(kwargs.get("quantize"))
        handle = real(*args, **kwargs)
        if stop:
            raise Loaded
        return handle
    monkeypatch.setattr(module, "load_pretrained", load)
    return seen


def test_train_with_model_quantize_trains_on_the_int8_base(word_models, tmp_path, monkeypatch):
    import uniarm_jax.train.loop as loop
    from uniarm_jax.train.config import load_run_config

    seen = recording_loader(monkeypatch, loop)
    config = load_run_config(None, [
        f"model.base={word_models / 'base'}", f"data.train={write_pairs(tmp_path / 't.jsonl', 16, seed=0)}",
        f"data.dev={write_pairs(tmp_path / 'd.jsonl', 8, seed=1)}", "data.schema=multi", "data.template=raw",
        "data.bucket=16", "objective.betas=[0.5,0.5]", "optim.batch_size=8", "optim.max_steps=1",
        "run.progress=false", "run.tensorboard=false", f"run.out_dir={tmp_path / 'run'}", "model.quantize=int8"])
    result = loop.train(config, log=lambda *_: None)
    assert seen == ["int8"] and result["step"] == 1 and np.isfinite(result["dev"]["loss"])


def test_evaluate_takes_quantize_from_its_config_and_the_flag(word_models, tmp_path, monkeypatch):
    import uniarm_jax.eval.evaluate as evaluation

    seen = recording_loader(monkeypatch, evaluation, stop=True)
    config = tmp_path / "eval.yaml"
    config.write_text(f"base: {word_models / 'base'}\nprompts: {word_models / 'prompts.jsonl'}\n"
                      "objectives: [brevity]\nreference: [0]\n")
    for args in (["quantize=int8"], ["--quantize", "int8"], []):
        with pytest.raises(Loaded):
            run_uniarm("evaluate", config, *args)
    assert seen == ["int8", "int8", None]


# ------------------------------------------------------------------------------------ refusals

def test_unknown_quantizations_are_refused_listing_the_valid_ones(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"quantize='int4' is not a supported quantization; expected one of "
                                          r"\['int8'\]"):
        uniarm_jax.load_pretrained(tiny_dir, quantize="int4")
    from uniarm_jax.eval.evaluate import load_eval_config
    from uniarm_jax.train.config import load_run_config
    with pytest.raises(ConfigError, match=r"model\.quantize='int4' is not a supported quantization.*'int8'"):
        load_run_config(None, ["model.quantize=int4"])
    with pytest.raises(ConfigError, match=r"quantize='nf4' is not a supported quantization.*'int8'"):
        load_eval_config(None, ["base=b", "prompts=p", "objectives=[brevity]", "reference=[0]", "quantize=nf4"])
    with pytest.raises(SystemExit) as exit_:  # argparse: usage and "invalid choice: 'int4' (choose from int8)"
        run_uniarm("sample", "--base", tiny_dir, "--prompts", "p", "--out", tmp_path / "o", "--quantize", "int4")
    assert exit_.value.code == 2


def test_a_pre_quantized_checkpoint_is_refused_naming_its_method(tiny_dir, tmp_path):
    shutil.copytree(tiny_dir, tmp_path / "gptq")
    with open(tmp_path / "gptq" / "config.json") as f:
        config = json.load(f)
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    with open(tmp_path / "gptq" / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ConfigError, match=r"quantization_config \(quant_method='gptq'\) is not supported"):
        uniarm_jax.load_pretrained(str(tmp_path / "gptq"), quantize="int8")


def test_a_kernel_with_non_finite_weights_is_refused_naming_tensor_and_row(tmp_path):
    import torch

    model = make_tiny_llama(tmp_path)
    with torch.no_grad():
        model.model.layers[1].self_attn.v_proj.weight[5, 3] = float("nan")
    model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"tensor 'model\.layers\.1\.self_attn\.v_proj\.weight' holds "
                                              r"non-finite values \(in row 5, an output channel\)"):
        uniarm_jax.load_pretrained(str(tmp_path), quantize="int8")


def test_writing_float_weights_from_an_int8_base_is_refused(tiny_dir, tmp_path):
    q8 = uniarm_jax.load_pretrained(tiny_dir, quantize="int8")
    with pytest.raises(ConfigError, match="writing a Hugging Face directory needs the base's float weights; "
                                          "this base is loaded with quantize='int8'"):
        uniarm_jax.save_pretrained(q8, str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="merging an adapter into the base needs the base's float weights"):
        merge_adapter(init_adapter(q8, AdapterConfig(kind="lora")))
