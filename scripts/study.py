"""The study of docs/results.md, end to end on a CPU, resumable: run it again after an interruption and
it continues where it stopped (every step is skipped when its output exists, `uniarm train` resumes
from its last checkpoint and `uniarm evaluate` from its last finished row).

    .venv/bin/python scripts/study.py [--commit] [STEP ...]      (default: every step, in this order)

--commit commits the outputs as they are made, every 20 minutes while a command runs (the latest
checkpoint of an unfinished training included) and when it ends: a session cut off mid-run then loses
minutes, not the run. Each commit replaces the previous progress commit while that is still HEAD, so
the history keeps one commit per command, not one checkpoint every 20 minutes. It commits the study's
folders only, so it can run in the checkout a person is working in (scripts/commit_progress.py).

Steps:
  data                the pairs: 4 samples of the base per prompt, scored, split by prompt (data/study/)
  heal                the weak ARM's base: SmolLM2's first 6 + last 6 layers, distilled on the base's samples
  k2_same_size        ARMs on SmolLM2-135M-Instruct for (readability, relevance), with the ablations
  k2_weak_to_strong   the same methods' ARMs on the healed 12-layer model guiding SmolLM2
  k3_weak_to_strong   k = 3 (readability, relevance, sentiment), weak-to-strong
  curves              dev accuracy by training step of every ARM (dev_curves.png), the healing's dev nats
  ends                how each trained ARM rates ending: its log-prob of EOS where the base's dev samples
                      ended, beside its base's (ends.json per experiment)
  anchor_sweep        GenARM readability at anchors λ = 10, 3 and 1: its EOS and its dev readability
                      (runs/study/probes/, docs/results/study/probes/anchor/)
  status              what is done: each ARM trained, training (its last checkpoint) or not started, and
                      each evaluation's finished rows per method

What a later session needs is committed as it is made (a session starts from a fresh clone): each ARM's
adapter and metrics.jsonl under runs/study/ (its checkpoints, and the full-size truncated and merged
weak models, are not: `heal` rebuilds the merged model from the committed healing adapter in a minute),
and each evaluation's finished rows (generations/) and reports under docs/results/study/. A training
cut by the end of a session resumes from its last checkpoint only if that checkpoint was committed
(`--commit` does it; by hand: `git add -f runs/study/<setting>/<config>/checkpoints/<step>`).

An experiment goes method by method (UniARM's default first): it trains the method's ARMs (the same
budget for every method), chooses its guidance weight on the dev prompts (never on test), then adds
it to the evaluation on the 100 test prompts, with intervals and paired differences (generating only
the new method's rows). Each experiment's outputs go to docs/results/study/<experiment>/; the ARMs
to runs/study/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from commit_progress import commit_progress  # scripts/, this script's sys.path[0]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIARM = os.environ.get("UNIARM", os.path.join(ROOT, ".venv", "bin", "uniarm"))
RUNS = os.path.join(ROOT, "runs", "study")
RESULTS = os.path.join(ROOT, "docs", "results", "study")
DATA = os.path.join(ROOT, "data", "study")
# guidance weights tried on dev: at 1 a same-size readability GenARM already writes run-on repetition
# ("I'm not sure. I'm not sure. ..."), which Flesch reading ease rewards and the degeneracy rule fails
WEIGHTS = (0.25, 0.5, 1.0)
K2 = ["readability", "relevance"]
K3 = K2 + ["sentiment"]

# experiment -> (setting, objectives, {method: ARM configs, in α order for GenARM})
EXPERIMENTS = {
    "k2_same_size": ("same", K2, {
        "uniarm_dim_global": ["uniarm_dim_global"], "genarm": ["genarm_readability", "genarm_relevance"],
        "parm": ["parm"], "uniarm_weighted_vote": ["uniarm_weighted_vote"],
        "ablation_mlp_conditioning": ["ablation_mlp_conditioning"],
        "ablation_pblora_uniarm_loss": ["ablation_pblora_uniarm_loss"],
        "ablation_moslora_parm_loss": ["ablation_moslora_parm_loss"]}),
    "k2_weak_to_strong": ("weak", K2, {
        "uniarm_dim_global": ["uniarm_dim_global"], "genarm": ["genarm_readability", "genarm_relevance"],
        "parm": ["parm"], "uniarm_weighted_vote": ["uniarm_weighted_vote"],
        # same size, PBLoRA with UniARM's loss beat both UniARM and PARM (docs/results.md): does it hold here?
        "ablation_pblora_uniarm_loss": ["ablation_pblora_uniarm_loss"]}),
    "k3_weak_to_strong": ("weak", K3, {
        "uniarm_dim_global": ["uniarm_dim_global_k3"],
        "genarm": ["genarm_readability", "genarm_relevance", "genarm_sentiment"], "parm": ["parm_k3"],
        "uniarm_weighted_vote": ["uniarm_weighted_vote_k3"]}),
}
COMPARE = [["uniarm_dim_global", "parm"], ["uniarm_dim_global", "genarm"], ["uniarm_weighted_vote", "parm"],
           ["uniarm_weighted_vote", "genarm"], ["uniarm_dim_global", "base"],
           # the ablations, each against the method it changes in one respect:
           ["ablation_mlp_conditioning", "uniarm_dim_global"],    # conditioning: mlp - linear
           ["ablation_pblora_uniarm_loss", "uniarm_dim_global"],  # adapter, UniARM's loss: PBLoRA - MoSLoRA
           ["ablation_moslora_parm_loss", "parm"],                # adapter, PARM's loss: MoSLoRA - PBLoRA
           ["uniarm_dim_global", "ablation_moslora_parm_loss"],   # loss, MoSLoRA: UniARM's - PARM's
           ["ablation_pblora_uniarm_loss", "parm"]]               # loss, PBLoRA: UniARM's - PARM's
EVAL = {"template": "chat", "max_new_tokens": 128, "temperature": 0.0, "degeneracy": True, "batch_size": 64}
ANCHORS = (10.0, 3.0, 1.0)  # anchor_sweep's λ
SWEEP_WEIGHTS = (0.5, 1.0, 2.0)
GRID = {2: 10, 3: 3}  # simplex grid steps: 11 points for k = 2, 10 for k = 3
REFERENCE = {"readability": 0.0, "relevance": -1.0, "sentiment": -1.0}  # each score's least value
SCORERS = {"readability": "readability", "relevance": "relevance", "sentiment": {"kind": "vader"}}  # by data name
COMMIT = [False]  # --commit: outputs committed as they are made (scripts/commit_progress.py)
COMMIT_EVERY = 1200  # seconds between commits while a command runs (a checkpoint commits ~2.5 MB)


def run(*args) -> None:
    """Runs one `uniarm` command; with --commit, its outputs so far are committed every COMMIT_EVERY
    seconds while it runs and once when it ends (scripts/commit_progress.py)."""
    print("+", " ".join(map(str, args)), flush=True)
    process = subprocess.Popen([str(a) for a in args], cwd=ROOT)
    label = " ".join(portable(str(a)) if os.path.exists(str(a)) else str(a) for a in args[1:3])
    while process.poll() is None:
        try:
            process.wait(timeout=COMMIT_EVERY)
        except subprocess.TimeoutExpired:
            save(f"Study progress: {label}, committed as it runs (scripts/study.py --commit)", progress=True)
    save(f"Study: {label} {'finished' if process.returncode == 0 else f'stopped ({process.returncode})'}")
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, args)


PROGRESS = [None]  # this process's last "Study progress" commit, which the next commit replaces if still HEAD


def save(message: str, progress: bool = False) -> None:
    if COMMIT[0] and (commit := commit_progress(ROOT, [os.path.relpath(d, ROOT) for d in (RUNS, RESULTS, DATA)],
                                                message, replace=PROGRESS[0])):
        PROGRESS[0] = commit if progress else None
        print(f"committed {commit[:10]}: {message}", flush=True)


def base_dir() -> str:
    out = subprocess.run([UNIARM, "prepare-smollm2"], check=True, capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def portable(path: str) -> str:
    """A path as the committed configs write it: under the repository relative, under $HOME with ~."""
    path = os.path.abspath(path)
    if path.startswith(ROOT + os.sep):
        return os.path.relpath(path, ROOT)
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path


def arm_base(setting: str) -> str:
    return base_dir() if setting == "same" else os.path.join(RUNS, "weak")


def arm_dir(setting: str, config: str) -> str:
    return os.path.join(RUNS, setting, config)


def data() -> None:
    if not os.path.isfile(os.path.join(DATA, "summary.json")):
        run(UNIARM, "make-data", "--base", base_dir(), "--out", DATA, "--prompts", os.path.join(DATA, "prompts.jsonl"),
            "--objectives", "readability,relevance,vader", "--samples", 4, "--degeneracy", "--max-new-tokens", 128,
            "--splits", "580,40,100", "--batch-size", 64, "--seed", 0)


def heal() -> None:
    raw, healed, run_dir = (os.path.join(RUNS, name) for name in ("weak_truncated", "weak", "heal"))
    if not os.path.isfile(os.path.join(raw, "config.json")):
        run(UNIARM, "truncate", "--base", base_dir(), "--first", 6, "--last", 6, "--out", raw)
    if not os.path.isfile(os.path.join(run_dir, "adapter", "adapter_config.json")):
        run(UNIARM, "train", "configs/study/heal_weak.yaml", f"model.base={raw}", f"run.out_dir={run_dir}")
    if not os.path.isfile(os.path.join(healed, "config.json")):
        run(UNIARM, "export", "--base", raw, "--adapter", os.path.join(run_dir, "adapter"), "--out", healed,
            "--format", "merged")


def train(experiment: str, name: str) -> None:
    """The ARMs of one method of `experiment` (each skipped when trained; a training resumes)."""
    setting = EXPERIMENTS[experiment][0]
    for config in EXPERIMENTS[experiment][2][name]:
        out = arm_dir(setting, config)
        if not os.path.isfile(os.path.join(out, "adapter", "adapter_config.json")):
            run(UNIARM, "train", f"configs/study/{config}.yaml", f"model.base={arm_base(setting)}",
                f"run.out_dir={out}")


def eval_config(experiment: str, prompts: str, out_dir: str, methods: dict, grid_steps: int | None = None,
                prefs: list | None = None) -> str:
    """An evaluation config (JSON is YAML) for `uniarm evaluate`, written beside its outputs."""
    setting, objectives, _ = EXPERIMENTS[experiment]
    config = {"base": portable(base_dir()), "prompts": portable(prompts),
              "objectives": [SCORERS[o] for o in objectives], **EVAL,
              "reference": [REFERENCE[o] for o in objectives], "grid_steps": grid_steps or GRID[len(objectives)],
              "out_dir": portable(out_dir), "title": experiment, "methods": methods,
              "compare": [c for c in COMPARE if all(n == "base" or n in methods for n in c)]}
    if prefs is not None:  # instead of the grid
        config["prefs"] = prefs
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "config.yaml")
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    return path


def arms(experiment: str, method: str) -> list[str]:
    setting, _, methods = EXPERIMENTS[experiment]
    return [portable(os.path.join(arm_dir(setting, c), "adapter")) for c in methods[method]]


def method(experiment: str, name: str, weight: float) -> dict:
    """A method of an evaluation config: its ARMs, each at the guidance weight `weight`."""
    paths = arms(experiment, name)
    return {"arms": paths, "arm_weights": [weight] * len(paths)}


def reported(out_dir: str) -> set:
    """The methods an evaluation's results.json holds (none before its first run)."""
    path = os.path.join(out_dir, "results.json")
    return set(json.load(open(path))["methods"]) if os.path.isfile(path) else set()


def weights(experiment: str, names: list[str]) -> dict[str, float]:
    """Each method's guidance weight: the one of WEIGHTS with the largest hypervolume on the dev
    prompts (3 preference vectors, 40 prompts), the same rule for every method."""
    out_dir = os.path.join(RESULTS, experiment, "dev_weights")
    methods = {f"{m}@{w}": method(experiment, m, w) for m in names for w in WEIGHTS}
    if not set(methods) <= reported(out_dir):
        run(UNIARM, "evaluate", eval_config(experiment, os.path.join(DATA, "dev_prompts.jsonl"), out_dir, methods,
                                            grid_steps=2), "bootstrap=0")
    results = json.load(open(os.path.join(out_dir, "results.json")))["methods"]
    return {m: max(WEIGHTS, key=lambda w: results[f"{m}@{w}"]["hv"]) for m in names}


def evaluate(experiment: str, names: list[str]) -> None:
    """The test evaluation of the methods `names` at their dev-chosen weights. An evaluation with more
    methods than the last generates only the new ones (the others' rows are kept, eval/row_log.py)."""
    out_dir = os.path.join(RESULTS, experiment)
    if set(names) <= reported(out_dir):
        return
    methods = {m: method(experiment, m, w) for m, w in weights(experiment, names).items()}
    run(UNIARM, "evaluate", eval_config(experiment, os.path.join(DATA, "test_prompts.jsonl"), out_dir, methods))


def curves() -> None:
    """Dev accuracy by step of every trained ARM, one plot per setting and k (docs/results.md)."""
    from uniarm_jax.eval.plots import dev_curves

    for experiment, (setting, objectives, methods) in EXPERIMENTS.items():
        runs = {}
        for method, configs in methods.items():
            for i, config in enumerate(configs):
                path = os.path.join(arm_dir(setting, config), "metrics.jsonl")
                if os.path.isfile(path):
                    runs[config] = (path, [objectives[i]] if method == "genarm" else None)
        if runs:
            dev_curves(runs, os.path.join(RESULTS, experiment, "dev_curves.png"), title=experiment)
    heal_log = os.path.join(RUNS, "heal", "metrics.jsonl")
    if os.path.isfile(heal_log):
        rows = [json.loads(line) for line in open(heal_log)]
        dev = {r["step"]: r["nats_per_token"] for r in rows if r.get("split") == "dev"}
        with open(os.path.join(RESULTS, "heal_dev_nats.json"), "w") as f:
            json.dump(dev, f, indent=1)


def eos_report(setting: str, arms: dict[str, str], objectives: list[str]) -> dict:
    """Each ARM's (name -> adapter directory, all on `setting`'s base) mean log-prob of EOS at the ends of
    the dev responses that ended, beside its base's, at each one-hot α for a conditioned ARM. A pair loss
    can lower a rejected response's EOS without bound and so teach an ARM never to end; this is where
    that shows (docs/results.md)."""
    import numpy as np

    from uniarm_jax import load_pretrained, load_tokenizer, logits
    from uniarm_jax.data.pairs import load_preferences
    from uniarm_jax.data.tokenization import encode
    from uniarm_jax.hf.adapter_files import load_adapter
    from uniarm_jax.train.config import load_run_config

    tokenize = load_run_config("configs/study/common.yaml").data.tokenize_config()
    dev = load_preferences(os.path.join(DATA, "dev.jsonl"), "multi")
    ended = [(e.prompt, r) for e in dev.examples for r, end in zip((e.response_0, e.response_1), e.ended) if end]
    base, tokenizer = load_pretrained(arm_base(setting)), load_tokenizer(arm_base(setting))
    rows = [encode(tokenizer, p, r, tokenize) for p, r in ended]
    length = max(len(ids) for ids, _ in rows)
    ids = np.array([np.pad(i, (0, length - len(i))) for i, _ in rows], np.int32)
    mask = np.array([[1] * len(i) + [0] * (length - len(i)) for i, _ in rows], np.int32)
    last = np.array([len(i) - 1 for i, _ in rows])

    def eos_logprob(handle, pref=None) -> float:
        out = []
        for a in range(0, len(ids), 8):
            z = logits(handle, ids[a:a + 8], mask[a:a + 8], pref)
            at = z[np.arange(len(z)), last[a:a + 8] - 1]  # the position that predicts the final EOS
            out += list(at[np.arange(len(z)), ids[a:a + 8][np.arange(len(z)), last[a:a + 8]]]
                        - np.logaddexp.reduce(at, axis=-1))
        return float(np.mean(out))

    report = {"responses": len(rows), "base": eos_logprob(base)}
    for name, path in arms.items():
        handle = load_adapter(base, path)
        if handle.adapter_config.kind == "lora":
            report[name] = eos_logprob(handle)
        else:
            report[name] = {o: eos_logprob(handle, np.eye(len(objectives))[i]) for i, o in enumerate(objectives)}
        print(name, report[name], flush=True)
    return report


def ends() -> None:
    """`eos_report` of every trained ARM of each experiment, into its ends.json."""
    for experiment, (setting, objectives, methods) in EXPERIMENTS.items():
        arms = {c: os.path.join(arm_dir(setting, c), "adapter") for cs in methods.values() for c in cs}
        arms = {c: path for c, path in arms.items() if os.path.isfile(os.path.join(path, "adapter_config.json"))}
        if arms:
            with open(os.path.join(RESULTS, experiment, "ends.json"), "w") as f:
                json.dump(eos_report(setting, arms, objectives), f, indent=1)


def anchor_sweep() -> None:
    """GenARM readability trained at the full budget for each anchor λ of ANCHORS (λ = 10, the study's
    first, left every ARM at its base), then on the dev prompts at α = (1, 0) (the relevance ARM at
    weight 0) at each guidance weight of SWEEP_WEIGHTS: how far readability moves, and whether the
    guided answers still end (ends.json)."""
    from uniarm_jax.eval.plots import dev_curves

    arms = {}
    for anchor in ANCHORS:
        out = os.path.join(RUNS, "probes", f"anchor_{anchor:g}", "genarm_readability")
        if not os.path.isfile(os.path.join(out, "adapter", "adapter_config.json")):
            run(UNIARM, "train", "configs/study/genarm_readability.yaml", f"model.base={base_dir()}",
                f"run.out_dir={out}", f"objective.anchor={anchor}")
        arms[anchor] = os.path.join(out, "adapter")
    out_dir = os.path.join(RESULTS, "probes", "anchor")
    os.makedirs(out_dir, exist_ok=True)
    dev_curves({f"anchor_{a:g}": (os.path.join(os.path.dirname(p), "metrics.jsonl"), ["readability"])
                for a, p in arms.items()}, os.path.join(out_dir, "dev_curves.png"), title="GenARM readability by λ")
    if not os.path.isfile(os.path.join(out_dir, "ends.json")):
        with open(os.path.join(out_dir, "ends.json"), "w") as f:
            json.dump(eos_report("same", {f"anchor_{a:g}": p for a, p in arms.items()}, K2), f, indent=1)
    relevance = os.path.join(RUNS, "probes", "anchor_10", "genarm_relevance", "adapter")  # trained by the study
    # at λ = 10 before the sweep (it weighs 0 at α = (1, 0))
    methods = {f"anchor_{a:g}@{w}": {"arms": [portable(p), portable(relevance)], "arm_weights": [w, w]}
               for a, p in sorted(arms.items()) for w in SWEEP_WEIGHTS}
    if not set(methods) <= reported(out_dir):
        run(UNIARM, "evaluate", eval_config("k2_same_size", os.path.join(DATA, "dev_prompts.jsonl"), out_dir, methods,
                                            prefs=[[1.0, 0.0]]), "bootstrap=0")


def status() -> None:
    for name, (setting, _, methods) in EXPERIMENTS.items():
        print(f"{name}:")
        for config in dict.fromkeys(c for configs in methods.values() for c in configs):
            out = arm_dir(setting, config)
            checkpoints = os.path.join(out, "checkpoints")
            steps = sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit()) if os.path.isdir(checkpoints) else []
            state = ("trained" if os.path.isfile(os.path.join(out, "adapter", "adapter_config.json"))
                     else f"training, checkpoint at step {steps[-1]}" if steps else "not started")
            print(f"  ARM {config}: {state}")
        for stage in ("dev_weights", ""):
            out_dir = os.path.join(RESULTS, name, stage)
            done = "done" if os.path.isfile(os.path.join(out_dir, "results.json")) else "not done"
            logs = os.path.join(out_dir, "generations")
            rows = {f[:-len(".jsonl")]: sum(1 for _ in open(os.path.join(logs, f))) - 1
                    for f in sorted(os.listdir(logs))} if os.path.isdir(logs) else {}
            print(f"  evaluation {stage or 'test'}: {done}" + (f"; finished rows {rows}" if rows else ""))


def experiment(name: str) -> None:
    """Method by method: its ARMs trained, then it joins the evaluation, so a partial study already has
    its first comparison."""
    done = []
    for method_name in EXPERIMENTS[name][2]:
        train(name, method_name)
        done.append(method_name)
        evaluate(name, done)


STEPS = {"data": data, "heal": heal, **{name: (lambda n=name: experiment(n)) for name in EXPERIMENTS},
         "anchor_sweep": anchor_sweep, "curves": curves, "ends": ends, "status": status}


def main(argv: list[str]) -> None:
    COMMIT[0] = "--commit" in argv
    steps = [s for s in argv if s != "--commit"]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        sys.exit(f"unknown step {unknown[0]!r}; expected some of {list(STEPS)} (and --commit)")
    for step in steps or list(STEPS):
        STEPS[step]()


if __name__ == "__main__":
    main(sys.argv[1:])
