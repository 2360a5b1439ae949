"""Retrieval: evaluation (R@K, mR1), FAISS indexes, the immutable index store, and the served model."""
