"""Models: shared layers, the codex quantizer, the three Du-IN models, baselines, registry."""
