"""The AMPere asset graph, one module per stage: raw items -> summaries -> training set -> features
-> encoder -> embeddings -> FAISS index -> retrieval evaluation and promotion; and beside them the
catalogue's index, refreshed by the champion from raw items without training. Assets hold wiring,
metadata and lineage; the ML work is done by `ampere`."""

from orchestration.assets.catalogue import catalogue_index
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

# The catalogue refresh: the raw items (with their checks) and the champion's index of them.
REFRESH_ASSETS = [raw_items, catalogue_index]
