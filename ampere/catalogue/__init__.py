"""The live catalogue: what a dataset is called (its own champion and served index), the content key of
each item, the embeddings kept per (model version, item content), and the refresh that embeds only what
changed."""
