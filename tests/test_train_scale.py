"""Training at scale: exact resume after a real signal or a kill, corrupt checkpoints, data
parallel over two CPU processes (gloo), and the precision / memory-layout options."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY_OVERRIDES, checkpoint_weights, train_tiny

from animbench import checkpoint
from animbench.train.distributed import Distributed, PairBatchSampler
from animbench.train.trainer import TrainOptions

# 8 steps over 3 epochs of 3 batches: the stops below land mid-epoch
LONG = copy.deepcopy(TINY_OVERRIDES)
LONG["train_params"].update({"max_steps": 8, "num_epochs": 3})


def _assert_close_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())
    assert worst <= atol, f"largest weight difference {worst}"


def _environment(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(
        ANIMBENCH_OFFLINE="1",  # no download: VGG19 random (--allow-random-weights)
        ANIMBENCH_CACHE=str(tmp_path / "cache"),
        TORCH_HOME=str(tmp_path / "torch"),
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    return env


def _train_command(data: Path, out: Path, overrides: dict, *extra: str) -> list[str]:
    return [
        *("-m", "animbench.cli", "train", "--threads", "1", "--device", "cpu"),
        *("--data", str(data), "--method", "fomm", "--preset", "fomm-synthetic"),
        *("--overrides", json.dumps(overrides), "--out", str(out), "--image-every", "3"),
        "--allow-random-weights",  # offline: a random VGG19, recorded as a deviation
        *extra,
    ]


def _run(tmp_path, data, out, overrides=LONG, *extra) -> None:
    command = [sys.executable, *_train_command(data, out, overrides, *extra)]
    subprocess.run(command, env=_environment(tmp_path), check=True, capture_output=True)


def _logged_steps(out: Path) -> int:
    log = out / "log.csv"
    return max(0, log.read_text().count("\n") - 1) if log.exists() else 0


def _start_and_signal(tmp_path, data, out, sig: int, *extra) -> subprocess.CompletedProcess:
    """Start a real training process and send it `sig` once half of its 8 steps are logged."""
    command = [sys.executable, *_train_command(data, out, LONG, *extra)]
    process = subprocess.Popen(
        command, env=_environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while _logged_steps(out) < 4 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory) -> Path:
    """8 steps in one go, in a subprocess like the interrupted runs."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    _run(tmp, tiny_dataset, tmp / "run")
    return tmp / "run"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_saves_and_resume_is_exact(uninterrupted, tiny_dataset, tmp_path, sig):
    out = tmp_path / "run"
    stopped = _start_and_signal(tmp_path, tiny_dataset, out, sig)
    assert stopped.returncode == 130, stopped.stderr.decode()[-2000:]
    assert b"rerun to resume" in stopped.stderr
    assert not (out / "model.pt").exists()
    state = checkpoint.load(out / "checkpoint-last.pt")
    assert 4 <= state["step"] < 8
    assert state["batch"] == state["step"] - 3 * state["epoch"]  # mid-epoch position kept

    _run(tmp_path, tiny_dataset, out)  # the same command resumes
    _assert_close_weights(
        checkpoint_weights(out / "model.pt"), checkpoint_weights(uninterrupted / "model.pt")
    )
    log, reference = pd.read_csv(out / "log.csv"), pd.read_csv(uninterrupted / "log.csv")
    assert list(log["step"]) == list(range(1, 9))  # no step lost, none twice
    pd.testing.assert_series_equal(log["perceptual"], reference["perceptual"], rtol=1e-6)


def test_kill_resumes_from_the_last_periodic_checkpoint(uninterrupted, tiny_dataset, tmp_path):
    """SIGKILL leaves no chance to save: the run redoes the steps after its last checkpoint
    (every 2 steps here) and the log keeps no duplicate rows."""
    out = tmp_path / "run"
    killed = _start_and_signal(
        tmp_path, tiny_dataset, out, signal.SIGKILL, "--checkpoint-every", "2"
    )
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists()
    assert checkpoint.load_resumable(out)[0]["step"] < 8
    _run(tmp_path, tiny_dataset, out, LONG, "--checkpoint-every", "2")
    _assert_close_weights(
        checkpoint_weights(out / "model.pt"), checkpoint_weights(uninterrupted / "model.pt")
    )
    assert list(pd.read_csv(out / "log.csv")["step"]) == list(range(1, 9))


def test_corrupt_checkpoint_falls_back_to_the_previous_good_one(
    trained_run, tiny_dataset, tmp_path
):
    out = tmp_path / "run"
    first = copy.deepcopy(TINY_OVERRIDES)
    first["train_params"]["max_steps"] = 2
    train_tiny(tiny_dataset, out, tmp_path / "cache", overrides=first,
               options=TrainOptions(checkpoint_every=1))  # fmt: skip
    assert checkpoint.load(out / "checkpoint-prev.pt")["step"] == 1
    last = out / "checkpoint-last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in a tensor: torch.load may not notice
    last.write_bytes(bytes(data))

    with pytest.warns(UserWarning, match="corrupt checkpoint set aside as checkpoint-last.pt"):
        train_tiny(tiny_dataset, out, tmp_path / "cache")
    assert (out / "checkpoint-last.pt.corrupt").exists()
    summary = json.loads((out / "train.json").read_text())
    assert any("checkpoint-prev.pt" in w for w in summary["warnings"])
    # resumed at step 1, redid steps 2-4: the weights of the uninterrupted 4 steps
    _assert_close_weights(
        checkpoint_weights(out / "model.pt"), checkpoint_weights(trained_run / "model.pt")
    )
    assert list(pd.read_csv(out / "log.csv")["step"]) == [1, 2, 3, 4]


def test_load_resumable_order_and_digests(tmp_path):
    payload = {"networks": {}, "training_state": {}, "epoch": 0}
    for step in (1, 2, 3):
        checkpoint.save_resumable({**payload, "step": step}, tmp_path, periodic_epoch=step)
    assert checkpoint.load_resumable(tmp_path)[0]["step"] == 3
    (tmp_path / "checkpoint-last.pt").write_bytes(b"torn")
    with pytest.warns(UserWarning, match="sha256 differs"):
        state, path = checkpoint.load_resumable(tmp_path)
    assert (state["step"], path.name) == (2, "checkpoint-prev.pt")
    (tmp_path / "checkpoint-prev.pt").unlink()
    assert checkpoint.load_resumable(tmp_path)[1].name == "checkpoint-epoch0003.pt"
    assert checkpoint.load_resumable(tmp_path / "empty")[0] is None


def test_sampler_shards_are_the_single_process_batches():
    single = PairBatchSampler(14, 4, seed=3, distributed=Distributed())
    shards = [PairBatchSampler(14, 4, 3, Distributed(rank, 2)) for rank in (0, 1)]
    for epoch in (0, 1):
        for sampler in [single, *shards]:
            sampler.start(epoch)
        whole = list(single)
        assert len(whole) == 3 and all(len(b) == 4 for b in whole)  # last partial one dropped
        assert [a + b for a, b in zip(*shards)] == whole
    single.start(1, skip=2)
    assert list(single) == whole[2:]
    epochs = {key[0] for batch in whole for key in batch}
    assert epochs == {1}


def test_items_do_not_depend_on_loading_order(tiny_dataset):
    from animbench.data.datasets import FramePairs

    pairs = FramePairs(tiny_dataset, augmentation_params={"flip_param": {"horizontal_flip": True}},
                       seed=5)  # fmt: skip
    first = pairs[(2, 4)]["source"]
    pairs[(0, 1)]
    assert torch.equal(pairs[(2, 4)]["source"], first)
    assert not all(torch.equal(pairs[(e, 4)]["source"], first) for e in range(3, 8))


def test_two_process_ddp_matches_one_process(tiny_dataset, tmp_path):
    """torchrun, 2 CPU processes (gloo), global batch 4 = 2 per process, against 1 process with
    batch 4: the same loss curve and weights (batch norm synchronised across the processes).
    Equivariance is off: its random transforms are drawn per process."""
    overrides = copy.deepcopy(TINY_OVERRIDES)
    overrides["train_params"].update(
        {
            "batch_size": 4,
            "num_repeats": 2,
            "max_steps": 4,
            "loss_weights": {"equivariance_value": 0, "equivariance_jacobian": 0},
            # Adam's first steps move every weight by ±lr whatever its gradient's size, so
            # float-rounding differences in near-zero gradients flip whole steps; a small lr
            # keeps that amplification below the tolerance
            "lr_generator": 2e-5,
            "lr_kp_detector": 2e-5,
        }
    )
    single, parallel = tmp_path / "single", tmp_path / "ddp"
    _run(tmp_path, tiny_dataset, single, overrides)
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *_train_command(tiny_dataset, parallel, overrides),
    ]
    result = subprocess.run(command, env=_environment(tmp_path), capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    one, two = pd.read_csv(single / "log.csv"), pd.read_csv(parallel / "log.csv")
    assert list(two["step"]) == [1, 2, 3, 4]
    pd.testing.assert_series_equal(one["perceptual"], two["perceptual"], rtol=1e-4)
    assert json.loads((parallel / "train.json").read_text())["processes"] == 2
    # Adam moves a weight by at most about lr per step, whichever sign rounding gives it
    _assert_close_weights(
        checkpoint_weights(single / "model.pt"), checkpoint_weights(parallel / "model.pt"), 2e-4
    )


def _batch_norm_worker(rank: int, store_path: str, out_path: str) -> None:
    import torch.distributed as dist

    from animbench.train.distributed import synchronise_batch_norm

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net = synchronise_batch_norm(net, torch.device("cpu"))
    x = (torch.randn(4, 3, 6, 6) * 3 + 5)[2 * rank : 2 * rank + 2]  # this process's half
    y = net(x)
    (y * torch.arange(y.numel()).view_as(y)).mean().backward()  # a loss that sees each output
    for p in net.parameters():
        dist.all_reduce(p.grad)  # DDP's averaging
        p.grad /= 2
    torch.save({"y": y, "grads": [p.grad for p in net.parameters()], "running": net[1].running_var},
               f"{out_path}.{rank}")  # fmt: skip
    dist.destroy_process_group()


def test_cross_process_batch_norm_equals_whole_batch(tmp_path):
    """Forward, parameter gradients and running statistics of batch norm split over two gloo
    processes equal plain batch norm on the whole batch."""
    import torch.multiprocessing as mp

    mp.spawn(_batch_norm_worker, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(4, 3, 6, 6) * 3 + 5
    y = net(x)
    halves = y.split(2)
    # each process's loss is the mean over its half; DDP averages: the whole-batch mean
    sum((h * torch.arange(h.numel()).view_as(h)).mean() for h in halves).div(2).backward()
    results = [torch.load(f"{tmp_path / 'out'}.{rank}", weights_only=True) for rank in (0, 1)]
    torch.testing.assert_close(torch.cat([r["y"] for r in results]), y, rtol=1e-5, atol=1e-5)
    for rank in (0, 1):
        for got, expected in zip(results[rank]["grads"], [p.grad for p in net.parameters()]):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(results[rank]["running"], net[1].running_var)


def test_bf16_autocast_and_channels_last_train(tiny_dataset, tmp_path, monkeypatch):
    from animbench.networks.vgg import Vgg19

    overrides = copy.deepcopy(TINY_OVERRIDES)
    overrides["train_params"]["max_steps"] = 2
    options = TrainOptions(precision="bf16", channels_last="on", image_every=1)
    nhwc = []  # the objective's frozen VGG19 is converted too, not only the model
    vgg_forward = Vgg19.forward

    def spy(self, x, num_slices=5):
        nhwc.append(self.features[0].weight.is_contiguous(memory_format=torch.channels_last))
        return vgg_forward(self, x, num_slices)

    monkeypatch.setattr(Vgg19, "forward", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_tiny(tiny_dataset, tmp_path / "run", tmp_path / "cache", overrides=overrides,
                   options=options)  # fmt: skip
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    assert summary["options"]["precision"] == "bf16"
    assert summary["options"]["channels_last"] == "on"
    assert nhwc and all(nhwc)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert log["perceptual"].notna().all() and (log["perceptual"] > 0).all()
    assert (tmp_path / "run" / "grid-latest.png").exists()


def test_channels_last_auto_follows_the_model_and_device():
    """ "auto": NHWC on CUDA; on a CPU too, unless the model has instance norms (TPSMM, CPABMM),
    whose CPU kernels copy NHWC data back to NCHW. "on" and "off" are kept as given."""
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    instance = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.InstanceNorm2d(4))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = TrainOptions().resolve(cpu)
    assert auto.channels_last == "auto"  # left to the model
    assert auto.resolve_layout(plain, cpu).channels_last == "on"
    assert auto.resolve_layout(instance, cpu).channels_last == "off"
    assert auto.resolve_layout(instance, cuda).channels_last == "on"
    for given in ("on", "off"):
        assert (
            TrainOptions(channels_last=given).resolve_layout(instance, cpu).channels_last == given
        )
    with pytest.raises(Exception, match="channels_last 'nhwc'"):
        TrainOptions(channels_last="nhwc").resolve(cpu)


def test_precision_resolves_per_device(monkeypatch):
    """ "auto": bf16 only on a CUDA GPU with bf16; "bf16-if-native": bf16 wherever the device
    has bf16 arithmetic (a CPU with AVX512-BF16 or AMX too), else fp32; explicit values stay."""
    from animbench import device as device_module
    from animbench.train import trainer

    cpu = torch.device("cpu")
    assert TrainOptions().resolve(cpu).precision == "fp32"
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(trainer, "native_bf16", lambda device, native=native: native)
        assert TrainOptions(precision="bf16-if-native").resolve(cpu).precision == expected
        assert TrainOptions(precision="auto").resolve(cpu).precision == "fp32"
        for given in ("bf16", "fp32"):
            assert TrainOptions(precision=given).resolve(cpu).precision == given
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert device_module.native_bf16(cpu)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not device_module.native_bf16(cpu)
    with pytest.raises(Exception, match="precision 'fp16'"):
        TrainOptions(precision="fp16").resolve(cpu)


@pytest.mark.parametrize("method", ["mraa", "tpsmm", "mtia"])
def test_every_family_trains_under_bf16_autocast(tiny_dataset, tmp_path, method):
    """Both stages (AVD too) under bf16 autocast with channels_last: nothing in the models
    (MRAA's SVD, TPS solves, attention) breaks on reduced-precision inputs."""
    from animbench.train.trainer import train

    one_step = {"max_steps": 1, "batch_size": 2, "num_epochs": 1, "num_repeats": 1}
    overrides = {"train_params": one_step, "dataset_params": {"frame_shape": [32, 32, 3]}}
    if method != "mtia":  # MTIA has no AVD stage
        overrides["train_avd_params"] = one_step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ANIMBENCH_OFFLINE", "1")
            mp.setenv("ANIMBENCH_CACHE", str(tmp_path / "cache"))
            train(tiny_dataset, method, f"{method}-synthetic", overrides=overrides,
                  out=tmp_path / "run", device="cpu", allow_random_weights=True,
                  options=TrainOptions(precision="bf16", channels_last="on", image_every=1))  # fmt: skip
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    losses = log.drop(columns=["step", "epoch", "seconds", "lr", "samples_per_s"])
    assert losses.notna().all().all() and len(log) == 1
    if method != "mtia":
        assert len(pd.read_csv(tmp_path / "run" / "log-avd.csv")) == 1
