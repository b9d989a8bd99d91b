import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_model
from fptq.eval.perplexity import perplexity


def test_matches_manual_gptq_formula():
    model = tiny_model("llama", outliers=False)
    ids = torch.randint(0, 258, (3 * 32 + 5,), generator=torch.Generator().manual_seed(0))
    res = perplexity(model, ids, seqlen=32, progress=False)
    assert res.windows == 3 and res.total_windows == 3
    nlls = []
    with torch.no_grad():
        for i in range(3):
            w = ids[i * 32 : (i + 1) * 32].unsqueeze(0)
            logits = model(w).logits
            nlls.append(F.cross_entropy(logits[0, :-1], w[0, 1:]) * 32)
    assert res.ppl == pytest.approx(math.exp(float(sum(nlls)) / (3 * 32)), rel=1e-5)
    assert perplexity(model, ids, seqlen=32, max_windows=1, progress=False).windows == 1


def test_too_short_text():
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(tiny_model("llama"), torch.arange(10), seqlen=32, progress=False)


def test_prompt_led_windows_score_only_the_window():
    """A fixed prompt (after the BOS) before every window is context: every window token is scored,
    from the prompt's last position on, and the prompt tokens never are."""
    model = tiny_model("llama", outliers=False)
    ids = torch.randint(0, 258, (2 * 16,), generator=torch.Generator().manual_seed(1))
    prompt = torch.tensor([5, 6, 7])
    res = perplexity(model, ids, seqlen=16, bos_id=1, prefix_ids=prompt, progress=False)
    nll = 0.0
    with torch.no_grad():
        for i in range(2):
            w = ids[i * 16 : (i + 1) * 16]
            inp = torch.cat([torch.tensor([1]), prompt, w]).unsqueeze(0)
            logits = model(inp).logits[0]
            nll += float(F.cross_entropy(logits[3:-1], w)) * 16  # positions 3..18 predict the window
    assert res.ppl == pytest.approx(math.exp(nll / 32), rel=1e-5)
    # no prefix at all is the plain protocol, BOS alone scores every window token
    plain = perplexity(model, ids, seqlen=16, progress=False)
    assert plain.ppl != res.ppl
