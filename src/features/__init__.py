"""Region features: obj36 TSV reading/writing and the memory-mapped feature store built from it."""

from features.opening import open_store
from features.store import FeatureStore, MissingImageError, RegionFeatures, StoreError, store_path_for
from features.store_writer import StoreWriter
from features.tsv import FIELDNAMES, RegionRecord, TSVFormatError, iter_tsv, write_tsv

__all__ = [
    "FIELDNAMES",
    "FeatureStore",
    "MissingImageError",
    "RegionFeatures",
    "RegionRecord",
    "StoreError",
    "StoreWriter",
    "TSVFormatError",
    "iter_tsv",
    "open_store",
    "store_path_for",
    "write_tsv",
]
