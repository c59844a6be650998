"""The playground page in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright
against `uniarm serve` on loopback. Type a prompt, generate: the guided and the base-alone answers
stream side by side, each equal to offline decoding; move a slider: the others follow on the simplex,
the guided answer changes to the offline answer at the new α, the base one does not."""

import os
import shutil

import pytest

from tests.serve_setup import LIMITS, make_models, running_server
from uniarm_jax.data.tokenization import TokenizeConfig, encode_prompt
from uniarm_jax.decode.rollout import guided_generate

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it "
                                "with apt-get install chromium)")
# offline and as root: no sandbox, and none of Chromium's own connections (refused here, many at a time)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PROMPT, N = "Name some fruit.", 12


def offline_text(models, pref) -> str:
    tok = models["tokenizer"]
    ids, _, _ = encode_prompt(tok, PROMPT, TokenizeConfig("chat", max_prompt_tokens=32, max_total_tokens=128))
    guides = [models["arm"]] if pref is not None else []
    (out,), _ = guided_generate(models["base"], guides, [ids], N, pref=pref, pad_id=tok.pad_token_id)
    return tok.decode(out, skip_special_tokens=True)


def test_playground_streams_guided_and_base_and_follows_the_sliders(tmp_path):
    from playwright.sync_api import sync_playwright

    models = make_models(tmp_path)
    middle, fruit, base = offline_text(models, [0.5, 0.5]), offline_text(models, [1.0, 0.0]), offline_text(models, None)
    assert middle != fruit  # α changes this prompt's guided answer

    def settled(page, pane):
        page.wait_for_function(f"document.getElementById('{pane}-output').dataset.state === 'done'", timeout=30000)
        return page.inner_text(f"#{pane}-output")

    with running_server("--base", models["base_dir"], "--arm", models["arm_dir"], "--slots", 2, *LIMITS) as (url, _), \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        failed = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready=true]")
        assert [page.inner_text(f"label[for=slider-{i}]") for i in range(2)] == ["fruit", "berry"]
        assert page.input_value("#slider-0") == page.input_value("#slider-1") == "0.5"

        page.fill("#prompt", PROMPT)
        page.fill("#max-tokens", str(N))
        page.click("#generate")
        assert settled(page, "guided") == middle and settled(page, "base") == base
        assert "done: 12 tokens" in page.inner_text("#guided-status")

        page.fill("#slider-0", "1")  # the other slider follows: α stays on the simplex
        assert page.inner_text("#value-1") == "0.00" and page.inner_text("#guided-pref") == "α = (1.00, 0.00)"
        assert settled(page, "guided") == fruit != middle
        assert page.inner_text("#base-output") == base

        page.click("#generate")  # both again: the base alone does not depend on α
        assert settled(page, "guided") == fruit and settled(page, "base") == base
        shot = os.path.join(os.environ.get("UNIARM_SCREENSHOTS", str(tmp_path)), "playground.png")
        os.makedirs(os.path.dirname(shot), exist_ok=True)
        page.screenshot(path=shot, full_page=True)
        assert os.path.getsize(shot) > 10_000 and not failed, failed  # nothing fetched from outside
        browser.close()
