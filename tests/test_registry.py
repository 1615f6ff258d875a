"""The dataset registry (issue 40): every benchmark is one entry looked up by name, and what used to branch on a
benchmark's name reads its entry; LLCM's search split holds identities out as RegDB's does."""

import random

import numpy as np
import pytest

from aminet.config import Config, ConfigError
from aminet.data import llcm, registry, synthetic
from aminet.data.builders import build_training_data, evaluation_set
from aminet.data.cache import dataset_files
from aminet.evaluation.metrics import llcm_metrics, regdb_metrics
from aminet.evaluation.protocol import evaluate_set


@pytest.fixture(scope="module")
def tiny_llcm(tmp_path_factory):
    return synthetic.generate(
        "llcm", tmp_path_factory.mktemp("llcm") / "LLCM", ids=12, images=2, height=32, width=16, workers=1
    )


def test_the_shipped_benchmarks_are_registered_and_an_unknown_name_is_one_line():
    assert registry.names() == ("sysu", "regdb", "llcm")
    with pytest.raises(ValueError, match="benchmark 'market': choose one of sysu, regdb, llcm"):
        registry.get("market")
    with pytest.raises(ConfigError, match="data.dataset: 'market'"):
        Config.from_dict({"data": {"dataset": "market"}})


def test_a_second_entry_under_a_taken_name_is_refused():
    sysu = registry.get("sysu")
    assert registry.register(sysu) is sysu  # the same entry again (a module reloaded) is harmless
    from dataclasses import replace

    with pytest.raises(ValueError, match="registered twice"):
        registry.register(replace(sysu, title="another"))
    with pytest.raises(ValueError, match="unknown rank rule"):
        registry.register(replace(sysu, name="x", rank_rules={"remove_everything": True}))
    assert "x" not in registry.names()


def test_each_settings_field_is_validated_against_its_benchmark():
    with pytest.raises(ConfigError, match=r'eval.llcm_directions\[1\]: .*"ir2vis" or "vis2ir"'):
        Config.from_dict({"eval": {"llcm_directions": ["ir2vis", "v2t"]}})
    with pytest.raises(ConfigError, match="eval.llcm_directions"):
        Config.from_dict({"eval": {"llcm_directions": []}})
    # camera IMDAL needs several cameras per modality: refused on RegDB only
    Config.from_dict({"data": {"dataset": "llcm"}, "loss": {"imdal": "camera"}})
    with pytest.raises(ConfigError, match="branch or halves on RegDB"):
        Config.from_dict({"data": {"dataset": "regdb"}, "loss": {"imdal": "camera"}})


def test_the_layout_of_a_root_is_recognised_and_its_images_listed(tiny_llcm, tmp_path):
    assert registry.detect(tiny_llcm).name == "llcm"
    files = dataset_files(tiny_llcm)
    tops = {p.relative_to(tiny_llcm).parts[0] for p in files}
    assert tops == {"train_vis", "train_nir", "test_vis", "test_nir"}
    assert len(files) == sum(1 for p in tiny_llcm.rglob("*.jpg"))
    assert registry.detect(tmp_path) is None


def test_llcm_search_split_holds_out_identities_and_final_trains_on_the_lists(tiny_llcm):
    cfg = Config.from_dict({"data": {"dataset": "llcm", "purpose": "search", "root": str(tiny_llcm)}})
    train, val = build_training_data(cfg, tiny_llcm), evaluation_set(cfg, tiny_llcm)
    _, labels = llcm.read_train_list(tiny_llcm, "visible")
    held = set(val.probes[0].query.pids.tolist()) | set(val.probes[0].gallery.pids.tolist())
    kept = set(train.visible.pids.tolist()) | set(train.infrared.pids.tolist())
    assert held and kept and not held & kept and held | kept == set(labels.tolist())
    assert len(held) == max(2, round(0.2 * len(set(labels.tolist()))))
    # the validation probes follow the test protocol: both directions, eval.trials gallery draws, one gallery
    # image per identity and camera, drawn as random.Random(trial) draws over the sorted files
    assert [(p.setting, p.trial) for p in val.probes] == [(d, t) for d in ("ir2vis", "vis2ir") for t in range(10)]
    g = val.probes[0].gallery
    pairs = list(zip(g.pids.tolist(), g.cams.tolist()))
    assert pairs == sorted(set(pairs)) and g.cams.min() >= 1
    rng, source = random.Random(0), val.probes[10].query  # vis2ir's queries are the visible images
    expected = []
    for pid, cam in pairs:
        files = sorted(p for p, q, c in zip(source.paths, source.pids, source.cams) if (q, c) == (pid, cam))
        expected.append(rng.choice(files))
    assert g.paths == expected
    final = build_training_data(cfg.replace({"data.purpose": "final"}), tiny_llcm)
    assert final.num_classes == len(set(labels.tolist()))
    test = evaluation_set(cfg.replace({"data.purpose": "final"}), tiny_llcm)
    assert test.probes[0].query.paths == llcm.query_set(tiny_llcm, "ir2vis")[0]
    assert test.probes[3].gallery.paths == llcm.gallery_set(tiny_llcm, "ir2vis", 3)[0]


def test_the_protocol_applies_each_benchmarks_own_ranking_rules(tiny_llcm):
    """evaluate_set looks the ranking rules up in the registry: on LLCM its figures equal llcm_metrics (a query
    drops its own identity seen by its own camera number) on the same distances, and differ from RegDB's
    rules (nothing dropped) where a same-camera positive exists."""
    import zlib

    import torch

    cfg = Config.from_dict({"data": {"dataset": "llcm", "purpose": "final", "root": str(tiny_llcm)}})
    evalset = evaluation_set(cfg, tiny_llcm, trials=2)
    seen: list[str] = []

    def feature(path: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(path.encode())).normal(size=8)

    def load(paths):
        out = np.zeros((len(paths), 4, 4, 3), np.uint8)
        for i, p in enumerate(paths):
            seen.append(p)
            k = len(seen) - 1
            out[i, 0, 0] = (k % 256, k // 256 % 256, k // 65536)
        return out

    def extractor(images, modality):
        codes = (
            images[:, :, 0, 0] * torch.tensor([0.229, 0.224, 0.225])[None] + torch.tensor([0.485, 0.456, 0.406])[None]
        ) * 255
        idx = codes.round().long() @ torch.tensor([1, 256, 65536])
        return torch.as_tensor(np.stack([feature(seen[int(k)]) for k in idx]), dtype=torch.float32)

    df = evaluate_set(extractor, evalset, load)
    assert set(df.setting) == {"ir2vis", "vis2ir"} and set(df.trial) == {0, 1}
    differs = False
    for probe in evalset.probes:
        q = torch.nn.functional.normalize(
            torch.as_tensor(np.stack([feature(p) for p in probe.query.paths])).float(), dim=1
        )
        g = torch.nn.functional.normalize(
            torch.as_tensor(np.stack([feature(p) for p in probe.gallery.paths])).float(), dim=1
        )
        dist = -(q @ g.T)
        args = (dist, probe.query.pids, probe.gallery.pids, probe.query.cams, probe.gallery.cams)
        cmc, mAP, mINP = llcm_metrics(*args)
        row = df[(df.setting == probe.setting) & (df.trial == probe.trial)].iloc[0]
        assert row.R1 == pytest.approx(cmc[0]) and row.mAP == pytest.approx(mAP) and row.mINP == pytest.approx(mINP)
        differs |= not np.isclose(regdb_metrics(*args[:3])[1], mAP)
    assert differs  # the LLCM rule removed something somewhere: the check above could tell the rules apart
    assert registry.get("sysu").rank_rules == {"remove_cam2_for_cam3": True, "dedup_cmc": True}
    assert registry.get("regdb").rank_rules == {}
