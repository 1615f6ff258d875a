import pytest
import torch

from aminet.config import load_config
from aminet.engine import NonFiniteLossError, RecordingReporter, latest_checkpoint, save_checkpoint, train
from aminet.engine.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from aminet.engine.drills import Drill
from aminet.engine.schedule import lr_factor


def test_step_schedule_is_the_papers_staged_lr():
    o = load_config().optim
    lrs = {e: o.lr * lr_factor(e, o, 80) for e in (0, 5, 10, 19, 20, 49, 50, 79)}
    assert lrs[0] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.055)
    assert lrs[10] == pytest.approx(0.1) and lrs[19] == pytest.approx(0.1)
    assert lrs[20] == pytest.approx(0.01) and lrs[49] == pytest.approx(0.01)
    assert lrs[50] == pytest.approx(0.001) and lrs[79] == pytest.approx(0.001)


def test_cosine_schedule_endpoints():
    o = load_config(None, ["optim.schedule=cosine", "optim.min_lr_factor=0.01"]).optim
    assert lr_factor(10, o, 80) == pytest.approx(1.0)
    assert lr_factor(79, o, 80) == pytest.approx(0.01)
    mids = [lr_factor(e, o, 80) for e in range(10, 80)]
    assert all(b <= a for a, b in zip(mids, mids[1:]))


def test_checkpoints_are_atomic_rotated_and_damage_is_skipped(tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, epoch, {"epoch": epoch, "w": torch.full((3,), float(epoch))}, "x: 1\n", keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch-0002", "epoch-0003"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "epoch-0003" and state["epoch"] == 3
    newest = tmp_path / "epoch-0003" / "state.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path / "epoch-0003")
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "epoch-0002" and torch.equal(state["w"], torch.full((3,), 2.0))


def test_train_reports_evaluations_and_checkpoints(tiny_config, tmp_path):
    rep = RecordingReporter()
    result = train(tiny_config(), rep, tmp_path / "run", quiet=True)
    assert [e for e, _, _ in rep.reports] == [2, 3]  # every eval_every epochs and at the end
    for _, metrics, ckpt in rep.reports:
        assert {"R1", "mAP", "mINP", "score"} <= set(metrics)
        assert metrics["score"] == pytest.approx((metrics["R1"] + metrics["mAP"]) / 2)
        assert ckpt is not None and (ckpt / "state.pt").is_file()
    assert [e for e, _ in rep.epochs] == [1, 2, 3]
    assert {"loss", "id", "triplet", "imdal", "idal", "lr", "images_per_s"} <= set(rep.epochs[0][1])
    assert rep.epochs[0][1]["lr"] == pytest.approx(1e-4) and rep.epochs[1][1]["lr"] == pytest.approx(1e-3)
    assert result.evalset.name == "sysu-val" and result.frame is not None
    assert result.metrics == rep.reports[-1][1]


def test_resume_after_a_kill_mid_epoch_gives_the_same_weights(tiny_config, tmp_path):
    cfg = tiny_config("train.checkpoint_every=1")
    full = train(cfg, None, tmp_path / "a", quiet=True)

    class Killed(Exception):
        pass

    def kill(epoch, it):
        if (epoch, it) == (2, 1):
            raise Killed

    with pytest.raises(Killed):
        train(cfg, None, tmp_path / "b", quiet=True, on_step=kill)
    assert [p.name for p in list_checkpoints(tmp_path / "b" / "checkpoints")] == ["epoch-0001", "epoch-0002"]
    resumed = train(cfg, None, tmp_path / "b", quiet=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.metrics["R1"] == full.metrics["R1"] and resumed.metrics["mAP"] == full.metrics["mAP"]


def test_nan_loss_stops_the_run_with_a_clear_error(tiny_config, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at epoch 2, step 2"):
        train(tiny_config(), None, tmp_path / "run", quiet=True, drill=Drill(nan_at_step=4))


def test_deferred_loss_check_names_the_step_it_happened_at(tiny_config, tmp_path):
    # Loss values reach the host every 3 steps (as on a GPU, where each fetch is a synchronisation):
    # a NaN at epoch 2, step 1 is found two steps later and still named by its own step.
    cfg = tiny_config("train.host_sync_every=3")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at epoch 2, step 1 "):
        train(cfg, None, tmp_path / "run", quiet=True, drill=Drill(nan_at_step=3))


def test_host_sync_interval_does_not_change_training(tiny_config, tmp_path):
    runs = []
    for every in (1, 2):
        rep = RecordingReporter()
        result = train(
            tiny_config(f"train.host_sync_every={every}", "train.epochs=3"),
            rep,
            None,
            quiet=True,
        )
        runs.append(
            (
                [{k: v for k, v in ep.items() if k not in ("images_per_s", "epoch_seconds")} for _, ep in rep.epochs],
                result.model.state_dict(),
            )
        )
    assert runs[0][0] == runs[1][0]  # per-epoch mean of every loss term, all epochs
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_bf16_autocast_trains_on_the_cpu(tiny_config, tmp_path):
    # train.precision=bf16 on a CPU: autocast with a channels-last model (fast where the CPU has bf16 units)
    from aminet.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.precision=bf16 on a CPU: data.width=16 gives a 1-column map"):
        train(tiny_config("train.precision=bf16"), None, None, quiet=True)
    result = train(
        tiny_config(
            "train.precision=bf16",
            "train.epochs=2",
            "optim.milestones=[]",
            "train.eval_every=2",
            "data.height=64",
            "data.width=32",
            "data.upper_height=32",
            "model.last_stride=1",
        ),
        None,
        None,
        quiet=True,
    )
    assert result.extra["dtype"] == "torch.bfloat16"
    weights = [p for p in result.model.parameters() if p.dim() == 4]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert 0.0 <= result.metrics["R1"] <= 1.0 and result.epochs[-1]["loss"] > 0


def test_missing_data_root_is_a_clear_error(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="data.root: dataset folder not found"):
        train(cfg, None, None, quiet=True)
