"""Named model shapes. A recipe's `model.preset` starts from one; its own fields override.

Plain dicts of ModelConfig fields (no torch), so the recipe loader and the cost
estimator can use them without importing the model.
"""

PRESETS: dict[str, dict] = {
    # CPU demo: trains in minutes on two cores. In a fixed few minutes on 2 cores this
    # 2.6M-parameter shape beat d_model 256 (docs/LOG.md, demo sweep).
    "tiny": dict(d_model=192, n_layers=4, n_heads=3, context_length=256, qk_norm=True),
    # GPT-2 small / medium shapes, Llama-style blocks. The SwiGLU width is chosen so the MLP
    # holds as many weights as GPT-2's 4·d GELU MLP (3·d·f = 2·d·4d), vocab padded to 50304.
    "gpt2-124m": dict(vocab_size=50304, d_model=768, n_layers=12, n_heads=12, ffn_dim=2048,
                      context_length=1024, tie_embeddings=True),
    "gpt2-350m": dict(vocab_size=50304, d_model=1024, n_layers=24, n_heads=16, ffn_dim=2752,
                      context_length=1024, tie_embeddings=True),
    # TinyLlama's 1.1B shape (22 layers, GQA with 4 KV heads).
    "llama-1b": dict(vocab_size=32000, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4,
                     ffn_dim=5632, context_length=2048, tie_embeddings=False),
    # LLaMA (Touvron et al. 2023), Table 2 shapes.
    "llama-7b": dict(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, ffn_dim=11008,
                     context_length=2048, tie_embeddings=False),
    "llama-13b": dict(vocab_size=32000, d_model=5120, n_layers=40, n_heads=40, ffn_dim=13824,
                      context_length=2048, tie_embeddings=False),
    "llama-33b": dict(vocab_size=32000, d_model=6656, n_layers=60, n_heads=52, ffn_dim=17920,
                      context_length=2048, tie_embeddings=False),
    "llama-65b": dict(vocab_size=32000, d_model=8192, n_layers=80, n_heads=64, ffn_dim=22016,
                      context_length=2048, tie_embeddings=False),
}
