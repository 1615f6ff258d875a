"""Training and evaluation sets of SYSU-MM01 and RegDB for the two purposes of a run (kept as the one import
path earlier code and the tests use; each benchmark's sets now live in its own file, found by name through
``aminet.data.registry``).

*search* (hyperparameter search; model selection happens here, so the test identities are never seen):
    SYSU-MM01: train on ``train_id`` only; validate on the ``val_id`` identities with the SYSU rules
    (infrared queries from cams 3/6, visible galleries drawn per trial as in the test protocol).
    RegDB: a share of the trial's training identities is held out (a fixed draw per trial) and
    evaluated with the RegDB rules; the rest is trained on.
    LLCM (``aminet.data.llcm``): a share of the training identities held out likewise.
*final* (published numbers): SYSU-MM01 trains on train + val, RegDB on the trial's training file, LLCM on its
    training lists, and all are evaluated with the full test protocol.

Labels are relabelled 0..C-1 from the sorted original identities, shared by both modalities.
"""

from __future__ import annotations

from aminet.data.regdb import regdb_eval, regdb_train, regdb_val_ids
from aminet.data.sets import EvalSet, ImageList, Probe, TrainSet
from aminet.data.sysu import sysu_eval, sysu_train

__all__ = [
    "ImageList",
    "Probe",
    "EvalSet",
    "TrainSet",
    "sysu_train",
    "sysu_eval",
    "regdb_train",
    "regdb_eval",
    "regdb_val_ids",
]
