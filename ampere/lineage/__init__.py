"""Lineage: content fingerprints and code versions, one hashing helper, and promotion decisions."""
