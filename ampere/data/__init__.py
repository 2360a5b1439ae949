"""Dataset format, media loading (frames, video) and the synthetic ROPE-like generator."""
