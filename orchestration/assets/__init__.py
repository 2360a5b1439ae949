"""The AMPere asset graph, one module per stage: raw items -> summaries -> training set -> features
-> encoder -> embeddings -> FAISS index -> retrieval evaluation and promotion. Assets hold wiring,
metadata and lineage; the ML work is done by `ampere`."""

from orchestration.assets.data import quarantined_items, raw_items
from orchestration.assets.features import backbone_features
from orchestration.assets.serving import champion_promotion, embeddings, faiss_index, retrieval_evaluation
from orchestration.assets.summaries import asr_summaries, training_set
from orchestration.assets.training import trained_encoder

PIPELINE_ASSETS = [
    raw_items,
    asr_summaries,
    training_set,
    backbone_features,
    trained_encoder,
    embeddings,
    faiss_index,
    retrieval_evaluation,
    champion_promotion,
    quarantined_items,
]
