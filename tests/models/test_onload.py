"""Sequential onloading: the float model is never whole, and the result is bit-identical."""

import pytest
import torch

from conftest import tiny_model
from fptq.eval.perplexity import perplexity, perplexity_blockwise
from fptq.models.loading import ModelSpec, byte_tokenizer, load_model
from fptq.models.onload import BlockLoader, CheckpointError, SafetensorsReader
from fptq.quant.pipeline import quantize_model
from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec

SCHEMES = {
    "w4a8_fptq": QuantScheme(
        name="w4a8_fptq", weight=WeightSpec(group_size=32), act=ActSpec(settings=dict(v0=0.5, v1=3.0))
    ),
    "w4a16_gptq": QuantScheme(name="w4a16_gptq", weight=WeightSpec(group_size=32, algo="gptq")),
}


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def folder(request, tmp_path_factory):
    model = tiny_model("llama")
    if request.param:
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.embed_tokens.weight
    path = tmp_path_factory.mktemp("float")
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(str(path))
    return str(path)


def _load(folder, onload):
    model, _ = load_model(ModelSpec(name="t", source="hf", path=folder, onload=onload), "/nonexistent")
    return model


def test_skeleton_has_no_block_weights(folder):
    model = _load(folder, "sequential")
    blocks = model.model.layers
    assert all(p.is_meta for p in blocks.parameters())
    assert not model.model.embed_tokens.weight.is_meta and not model.lm_head.weight.is_meta
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight


@pytest.mark.parametrize("name", list(SCHEMES))
def test_sequential_quantization_equals_in_memory(folder, name, calib_ids):
    eager, seq = _load(folder, "eager"), _load(folder, "sequential")
    rep_e = quantize_model(eager, SCHEMES[name], calib_ids, progress=False)
    loader = BlockLoader(seq, torch.float32, "cpu")
    rep_s = quantize_model(seq, SCHEMES[name], calib_ids, progress=False, onload=loader.load)
    assert [r.act_scale for r in rep_s.layers] == [r.act_scale for r in rep_e.layers]
    x = torch.randint(0, 258, (2, 40), generator=torch.Generator().manual_seed(0))
    assert torch.equal(seq(x).logits, eager(x).logits)
    assert rep_s.memory["packed_bytes"] == rep_e.memory["packed_bytes"] > 0


def test_blockwise_float_perplexity_equals_full_forward(folder):
    eager, seq = _load(folder, "eager"), _load(folder, "sequential")
    ids = torch.randint(0, 258, (300,), generator=torch.Generator().manual_seed(1))
    full = perplexity(eager, ids, seqlen=64, progress=False)
    blockwise = perplexity_blockwise(
        seq, ids, BlockLoader(seq, torch.float32, "cpu"), seqlen=64, progress=False
    )
    assert blockwise.ppl == full.ppl and blockwise.windows == full.windows == 4
    assert all(p.is_meta for p in seq.model.layers.parameters())  # dropped again after use


def test_truncated_safetensors_is_a_clear_error(folder, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        SafetensorsReader(bad)


def test_sequential_needs_a_checkpoint_folder():
    with pytest.raises(ValueError, match="save the model with save_pretrained"):
        ModelSpec(source="random", onload="sequential")
    with pytest.raises(ValueError, match="model.packed_on"):
        ModelSpec(packed_on="gpu")


def test_hub_id_downloads_the_snapshot_then_reads_it(folder, monkeypatch):
    """onload=sequential with a hub id: snapshot_download (mocked: no network here), same path."""
    import huggingface_hub

    import fptq.models.loading as models

    calls = []

    def fake_download(repo_id, cache_dir=None, allow_patterns=None):
        calls.append((repo_id, allow_patterns))
        return folder

    monkeypatch.setattr(models, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    spec = ModelSpec(name="t", source="hf", hf_id="org/model", onload="sequential")
    model, _ = load_model(spec, "/nonexistent")
    assert calls and calls[0][0] == "org/model" and "*.safetensors" in calls[0][1]
    assert all(p.is_meta for p in model.model.layers.parameters())


def test_stream_blocks_moves_each_block_for_its_forward():
    from fptq.models.onload import stream_blocks

    moves = []

    class Spy(torch.nn.Module):
        def to(self, device):
            moves.append(str(device))
            return self

        def forward(self, x):
            moves.append("forward")
            return x

    blocks = [Spy(), Spy()]
    handles = stream_blocks(blocks, torch.device("cuda"), home="cpu")
    for b in blocks:
        b(torch.zeros(1))
    assert moves == ["cuda", "forward", "cpu"] * 2
    for h in handles:
        h.remove()
