import pytest

from aminet.data import regdb, splits, synthetic, sysu


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    return synthetic.generate("sysu", tmp_path_factory.mktemp("s") / "SYSU-MM01", ids=24, images=2, seed=2)


@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory):
    return synthetic.generate("regdb", tmp_path_factory.mktemp("r") / "RegDB", ids=20, images=3, seed=2)


def _count(root, ids, cams):
    return sum(len(sysu.camera_images(root, c, p) or []) for p in ids for c in cams)


def test_sysu_search_train_holds_out_val_ids(sysu_root):
    train_ids, val_ids = sysu.read_ids(sysu_root, "train"), sysu.read_ids(sysu_root, "val")
    tr = splits.sysu_train(sysu_root, "search")
    ids = set(tr.visible.pids.tolist()) | set(tr.infrared.pids.tolist())
    assert ids == set(train_ids) and not ids & set(val_ids)
    assert len(tr.visible) == _count(sysu_root, train_ids, (1, 2, 4, 5))
    assert len(tr.infrared) == _count(sysu_root, train_ids, (3, 6))
    assert set(tr.visible.cams.tolist()) <= {1, 2, 4, 5} and set(tr.infrared.cams.tolist()) <= {3, 6}
    # order: ids sorted, cameras in order, files sorted
    keys = list(zip(tr.visible.pids.tolist(), tr.visible.cams.tolist(), tr.visible.paths))
    assert keys == sorted(keys)
    # labels: 0..C-1 from the sorted ids, shared by both modalities
    lut = {pid: i for i, pid in enumerate(sorted(train_ids))}
    assert tr.num_classes == len(train_ids)
    assert tr.labels_visible.tolist() == [lut[p] for p in tr.visible.pids.tolist()]
    assert tr.labels_infrared.tolist() == [lut[p] for p in tr.infrared.pids.tolist()]

    val = splits.sysu_eval(sysu_root, "search", ("all",), trials=3)
    assert val.benchmark == "sysu" and len(val.probes) == 3
    for probe in val.probes:
        assert set(probe.query.pids.tolist()) <= set(val_ids)
        assert set(probe.gallery.pids.tolist()) <= set(val_ids)
        assert probe.query_modality == "infrared" and probe.gallery_modality == "visible"
    assert val.probes[0].gallery.paths == sysu.gallery_set(sysu_root, "all", 0, split="val")[0]


def test_sysu_final_uses_train_and_val(sysu_root):
    ids = sysu.read_ids(sysu_root, "train") + sysu.read_ids(sysu_root, "val")
    tr = splits.sysu_train(sysu_root, "final")
    assert tr.num_classes == len(ids)
    assert len(tr.visible) == _count(sysu_root, ids, (1, 2, 4, 5))
    test = splits.sysu_eval(sysu_root, "final", ("all", "indoor"), trials=10)
    assert len(test.probes) == 20 and test.name == "sysu-test"
    assert set(test.probes[0].query.pids.tolist()) <= set(sysu.read_ids(sysu_root, "test"))
    assert test.probes[0].query.paths == sysu.query_set(sysu_root)[0]


def test_regdb_search_holds_out_a_share_of_training_ids(regdb_root):
    part = regdb.split(regdb_root, 4, "train")
    all_ids = set(part.visible[1].tolist())
    tr = splits.regdb_train(regdb_root, 4, "search", val_share=0.2)
    val = splits.regdb_eval(regdb_root, 4, "search", ("v2t", "t2v"), val_share=0.2)
    held = set(val.probes[0].query.pids.tolist())
    assert len(held) == 2  # 20 % of 10 ids
    assert held | set(tr.visible.pids.tolist()) == all_ids and not held & set(tr.visible.pids.tolist())
    assert [p.setting for p in val.probes] == ["v2t", "t2v"]
    assert val.probes[0].query_modality == "visible" and val.probes[1].query_modality == "infrared"
    assert len(tr.visible) == len(tr.infrared) == 8 * 3
    # the held-out draw is fixed per trial
    again = splits.regdb_eval(regdb_root, 4, "search", ("v2t",), val_share=0.2)
    assert again.probes[0].query.paths == val.probes[0].query.paths


def test_regdb_final_is_the_trial_files(regdb_root):
    tr = splits.regdb_train(regdb_root, 2, "final")
    part = regdb.split(regdb_root, 2, "train")
    assert tr.visible.paths == part.visible[0] and tr.infrared.paths == part.thermal[0]
    assert tr.num_classes == 10
    test = splits.regdb_eval(regdb_root, 2, "final", ("v2t",))
    assert test.probes[0].query.paths == regdb.split(regdb_root, 2, "test").visible[0]


def test_bad_purpose(sysu_root, regdb_root):
    with pytest.raises(ValueError, match="purpose 'tune'"):
        splits.sysu_train(sysu_root, "tune")
    with pytest.raises(ValueError, match="purpose 'tune'"):
        splits.regdb_eval(regdb_root, 1, "tune")
    with pytest.raises(ValueError, match="direction 'x'"):
        splits.regdb_eval(regdb_root, 1, "final", ("x",))
