import numpy as np
import pytest
import torch
from layouts import write_regdb, write_sysu

from aminet.data import sysu
from aminet.evaluation import extract_features, format_summary, regdb_protocol, run_protocol, sysu_protocol


def colour_extractor(images, modality):
    """Mean colour: a perfect oracle on the colour-coded test layouts. Two named features."""
    mean = images.mean(dim=(2, 3))
    return {"pool": mean, "bn": mean * 2.0 + 0.0}


def test_sysu_protocol_end_to_end(tmp_path):
    root = write_sysu(tmp_path / "sysu", test=(5, 6, 7, 8, 9, 10), missing={(6, 2), (7, 6)})
    res = sysu_protocol(colour_extractor, root, modes=("all", "indoor"), trials=3, height=32, width=16)
    df = res.per_trial
    assert len(df) == 2 * 3 * 2  # modes x trials x features
    assert set(df.feature) == {"pool", "bn"} and set(df.trial) == {0, 1, 2}
    assert (df.R1 == 1.0).all() and (df.mAP == 1.0).all() and (df.mINP == 1.0).all()
    assert res.meta["num_query"] == len(sysu.query_set(root)[0])
    summary = res.summary
    assert {"R1_mean", "R1_std", "mINP_mean", "trials"} <= set(summary.columns)
    assert (summary.trials == 3).all()
    assert res.headline("all")["R1"] == 1.0
    text = format_summary(res)
    assert "100.00+-0.00" in text and "indoor" in text


def test_random_extractor_gives_chance_level(tmp_path):
    root = write_sysu(tmp_path / "sysu", test=tuple(range(5, 25)), images_per_cam=1)
    gen = torch.Generator().manual_seed(0)

    def random_features(images, modality):
        return torch.randn(images.shape[0], 32, generator=gen)

    res = run_protocol(random_features, root, "sysu", ["all"], trials=2, height=32, width=16)
    r1 = res.per_trial.R1.mean()
    assert 0.0 <= r1 < 0.3  # 20 identities: chance R1 is 1/20 (+ noise)


def test_flip_averaging_runs_and_keeps_oracle(tmp_path):
    root = write_sysu(tmp_path / "sysu")
    res = sysu_protocol(colour_extractor, root, ["all"], 1, height=32, width=16, flip=True)
    assert (res.per_trial.R1 == 1.0).all()


def test_regdb_protocol_per_trial_extractors(tmp_path):
    root = write_regdb(tmp_path / "regdb", n_ids=10, trials=(1, 2))
    calls = []

    def make(trial):
        def f(images, modality):
            calls.append((trial, modality))
            return images.mean(dim=(2, 3))

        return f

    res = regdb_protocol({1: make(1), 2: make(2)}, root, trials=(1, 2), height=32, width=16)
    df = res.per_trial
    assert set(df.setting) == {"v2t", "t2v"} and set(df.trial) == {1, 2}
    assert (df.R1 == 1.0).all()
    assert {c[0] for c in calls} == {1, 2} and {c[1] for c in calls} == {"visible", "infrared"}
    with pytest.raises(ValueError, match=r"no extractor given for RegDB trial\(s\) \[2\]"):
        regdb_protocol({1: make(1)}, root, trials=(1, 2))


def test_extract_features_normalises_and_restores_train_mode():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 4, 6))

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def extract(self, x, modality):
            assert not self.training
            return {"bn": self.net(x)}

    m = Wrapped().train()
    imgs = np.random.default_rng(0).integers(0, 255, (10, 8, 4, 3), dtype=np.uint8)
    out = extract_features(m, imgs, "visible", batch_size=3)
    assert out["bn"].shape == (10, 6)
    torch.testing.assert_close(out["bn"].norm(dim=1), torch.ones(10))
    assert m.training
    with pytest.raises(ValueError, match="modality 'rgb'"):
        extract_features(m, imgs, "rgb")


def test_bad_protocol_arguments(tmp_path):
    root = write_sysu(tmp_path / "sysu")
    with pytest.raises(ValueError, match="mode 'outdoor'"):
        sysu_protocol(colour_extractor, root, ["outdoor"])
    with pytest.raises(ValueError, match="benchmark 'market'"):
        run_protocol(colour_extractor, root, "market")
    with pytest.raises(ValueError, match="direction 'x2y'"):
        regdb_protocol(colour_extractor, root, directions=["x2y"])
