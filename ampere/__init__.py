"""AMPere: ASR-enhanced multimodal representations for cross-domain product retrieval."""
