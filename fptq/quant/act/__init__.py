"""Activation strategies, one file each, registered in `fptq.quant.methods.ACT_STRATEGIES`:
`per_tensor_static`, `per_token_dynamic`, `lae_static`, `fptq` (the paper's layerwise picker) and
`auto` (measured per layer). Each picks a `fptq.quant.modes.LayerMode` per linear."""
