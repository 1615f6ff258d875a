import dataclasses

import pytest
import yaml

from aminet.config import Config, ConfigError, load_config


def test_defaults_are_valid_and_follow_the_paper():
    cfg = load_config()
    assert cfg.loss.mmd_intra_weight == 0.4 and cfg.loss.mmd_inter_weight == 0.6
    assert cfg.optim.lr * cfg.optim.warmup_start_factor == pytest.approx(0.01)
    assert cfg.optim.lr * cfg.optim.gamma ** len(cfg.optim.milestone_shares) == pytest.approx(0.001)
    assert cfg.optim.warmup_epochs(80) == 10 and cfg.optim.milestone_epochs(80) == [20, 50]
    assert (cfg.data.height, cfg.data.width) == (288, 144)
    assert cfg.train.epochs == 80


def test_yaml_round_trip_is_exact():
    cfg = load_config(
        None,
        [
            "loss.mmd_multipliers=[0.5, 1, 2]",
            "optim.weight_decay=1e-3",
            "data.root=/data/sysu",
            "model.upper_body_ratio=0.6",
        ],
    )
    text = cfg.to_yaml()
    again = Config.from_yaml(text)
    assert again == cfg
    assert again.to_yaml() == text
    assert cfg.loss.mmd_multipliers == [0.5, 1.0, 2.0] and all(type(v) is float for v in cfg.loss.mmd_multipliers)
    assert cfg.optim.weight_decay == 1e-3  # "1e-3" is a string to PyYAML; read as a number
    assert yaml.safe_load(text)["data"]["root"] == "/data/sysu"


def test_load_file_with_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  dataset: regdb\n  regdb_trial: 3\nloss:\n  mmd_intra_weight: 0.2\n")
    cfg = load_config(
        path, ["loss.mmd_inter_weight=0.8", "train.epochs=5", "optim.warmup_epochs=1", "optim.milestones=[2,4]"]
    )
    assert cfg.data.dataset == "regdb" and cfg.data.regdb_trial == 3
    assert (cfg.loss.mmd_intra_weight, cfg.loss.mmd_inter_weight) == (0.2, 0.8)
    assert cfg.train.epochs == 5
    flat = cfg.flat()
    # the older epoch keys are read as shares of the config's train.epochs
    assert flat["loss.mmd_intra_weight"] == 0.2 and flat["optim.milestone_shares"] == [0.4, 0.8]
    assert "optim.milestones" not in flat and "optim.warmup_epochs" not in flat
    assert cfg.optim.warmup_epochs(5) == 1 and cfg.optim.milestone_epochs(5) == [2, 4]


@pytest.mark.parametrize(
    "epochs, warmup, stones", [(80, 10, [20, 50]), (40, 5, [10, 25]), (120, 15, [30, 75]), (7, 1, [2, 4])]
)
def test_the_papers_schedule_follows_any_training_length(epochs, warmup, stones):
    """experiments/sysu.yaml with any train.epochs: warm-up and milestones keep their shares (the paper's
    10 / 20 / 50 of 80 epochs)."""
    from pathlib import Path

    from aminet.config import read_yaml_tree
    from aminet.engine.schedule import lr_factor

    raw = read_yaml_tree(Path(__file__).resolve().parents[1] / "experiments" / "sysu.yaml")
    raw.pop("name")
    cfg = Config.from_dict(raw, [f"train.epochs={epochs}"])
    o = cfg.optim
    assert o.warmup_epochs(epochs) == warmup and o.milestone_epochs(epochs) == stones
    lrs = [o.lr * lr_factor(e, o, epochs) for e in range(epochs)]
    assert lrs[0] == pytest.approx(0.01) and lrs[warmup] == pytest.approx(0.1)
    assert lrs[stones[0] - 1] == pytest.approx(0.1) and lrs[stones[0]] == pytest.approx(0.01)
    assert lrs[-1] == pytest.approx(0.001)


def test_replace_with_mapping_and_strings():
    cfg = load_config()
    a = cfg.replace({"loss.mmd_intra_weight": 0.1, "model.upper_body_ratio": 0.55})
    b = cfg.replace(["loss.mmd_intra_weight=0.1", "model.upper_body_ratio=0.55"])
    assert a == b and a != cfg and cfg.loss.mmd_intra_weight == 0.4


@pytest.mark.parametrize(
    "override, field, allowed",
    [
        ("loss.mmd_intra_weight=-0.1", "loss.mmd_intra_weight", ">= 0"),
        ("loss.mmd_inter_weight=-1", "loss.mmd_inter_weight", ">= 0"),
        ("model.upper_body_ratio=0", "model.upper_body_ratio", r"\(0, 1\]"),
        ("model.upper_body_ratio=1.2", "model.upper_body_ratio", r"\(0, 1\]"),
        ("loss.mmd_multipliers=[]", "loss.mmd_multipliers", "non-empty"),
        ("loss.mmd_multipliers=[1, -2]", r"loss.mmd_multipliers\[1\]", "> 0"),
        ("data.regdb_trial=0", "data.regdb_trial", "1..10"),
        ("optim.milestone_shares=[0.6, 0.3]", "optim.milestone_shares", "increasing"),
        ("optim.milestone_shares=[0.3, 1.0]", r"optim.milestone_shares\[1\]", "before the end of training"),
        ("optim.milestone_shares=[0.1]", r"optim.milestone_shares\[0\]", "after warm-up"),
        ("optim.warmup_share=1", "optim.warmup_share", r"\[0, 1\)"),
        ("optim.milestones=[20, 90]", r"optim.milestones\[1\]", "0..79"),
        ("optim.warmup_epochs=80", "optim.warmup_epochs", "less than train.epochs"),
        ("eval.sysu_modes=[all, outdoor]", r"eval.sysu_modes\[1\]", "indoor"),
        ("data.flip_p=1.5", "data.flip_p", r"\[0, 1\]"),
    ],
)
def test_out_of_range_values_name_field_and_range(override, field, allowed):
    with pytest.raises(ConfigError, match=field) as err:
        load_config(None, [override])
    assert "out of range" in str(err.value)
    assert pytest.importorskip("re").search(allowed, str(err.value))


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.mmd_intra_weight=abc", "loss.mmd_intra_weight: expected a number, got 'abc'"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("model.non_local=maybe", "model.non_local: expected true or false"),
        ("model.arch=resnet101", "model.arch: 'resnet101' is not allowed; choose one of"),
        ("loss.mmd_multipliers=1", "loss.mmd_multipliers: expected a list"),
        ("loss.mmd_intra_wieght=0.3", "unknown key.*did you mean loss.mmd_intra_weight"),
        ("nonsense.key=1", "nonsense: unknown key"),
        ("loss=3", "loss: expected a mapping"),
        ("no_equals_sign", "expected the form section.key=value"),
        ("train.epochs=[1", "train.epochs: cannot read value"),
        ("loss.mmd_intra_weight=.nan", "finite"),
    ],
)
def test_wrong_types_and_keys(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        load_config(listy)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("loss:\n  mmd_intra_weight: -2\n")
    with pytest.raises(ConfigError, match="wrong.yaml: loss.mmd_intra_weight"):
        load_config(wrong)


def test_every_field_is_reachable_by_override():
    cfg = load_config()
    for key, value in cfg.flat().items():
        again = cfg.replace({key: value})
        assert again == cfg, key
    assert all(dataclasses.is_dataclass(getattr(cfg, s)) for s in ("data", "model", "loss", "optim", "train", "eval"))


def test_a_config_naming_a_field_twice_is_refused_with_the_key_and_line(tmp_path):
    """Plain YAML keeps the last of two equal keys, so a field written twice would lose its first value
    silently; every config and space file is read with a loader that refuses it."""
    from aminet.config import ConfigError, load_config

    cfg = tmp_path / "twice.yaml"
    cfg.write_text("train:\n  epochs: 3\n  epochs: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg))
    msg = str(err.value)
    assert msg.startswith(str(cfg)) and "the key 'epochs' appears twice" in msg and "line 3" in msg
    assert "\n" not in msg
    from aminet.config import Config

    with pytest.raises(ConfigError, match="appears twice"):
        Config.from_yaml("optim:\n  lr: 0.1\noptim:\n  lr: 0.2\n")
