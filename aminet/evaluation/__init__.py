"""Rank-k, mAP and mINP under the SYSU-MM01 and RegDB rules, the full test protocols over any feature
extractor, and a saved checkpoint on both benchmarks' test protocols (``aminet.evaluation.trained``)."""

from aminet.evaluation.metrics import llcm_metrics, rank_metrics, regdb_metrics, sysu_metrics
from aminet.evaluation.protocol import (
    ProtocolResult,
    extract_features,
    format_summary,
    regdb_protocol,
    run_protocol,
    sysu_protocol,
)

__all__ = [
    "sysu_metrics",
    "regdb_metrics",
    "llcm_metrics",
    "rank_metrics",
    "ProtocolResult",
    "extract_features",
    "format_summary",
    "sysu_protocol",
    "regdb_protocol",
    "run_protocol",
]
