"""Whole runs of the script, as a learner starts them."""
import csv
import re

import pytest
import torch
from PIL import Image

import gan_mnist
from conftest import SCRIPT, TINY_RUN_FLAGS, run_script


@pytest.fixture(scope="module")
def short_run(tiny_mnist, tmp_path_factory):
    """Two epochs of 4 steps (the last batch of each holds 8 images), stopped at step 6."""
    out_dir = tmp_path_factory.mktemp("run") / "outputs"
    result = run_script("--data-dir", tiny_mnist, "--out-dir", out_dir, "--epochs", "2", "--max-steps", "6",
                        *TINY_RUN_FLAGS)
    return result, out_dir


def test_a_short_run_succeeds_and_logs(short_run):
    result, out_dir = short_run
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Training on cpu (2 threads)" or lines[0].startswith("Training on cpu (")
    epoch_lines = [line for line in lines if line.startswith("epoch")]
    assert len(epoch_lines) == 2  # one full epoch, then the part of the second up to step 6
    for name in ("D loss", "G loss", "D(x)", "D(G(z))", "img/s", "elapsed", "ETA"):
        assert name in epoch_lines[0]
    assert re.search(r"step\s+4\b", epoch_lines[0]) and re.search(r"step\s+6\b", epoch_lines[1])


def test_a_short_run_writes_every_picture(short_run):
    _, out_dir = short_run
    samples = sorted(path.name for path in (out_dir / "samples").iterdir())
    # the untrained generator's, every 3 steps, at the end of epoch 1, and where the run stopped (step 6)
    assert samples == ["epoch_000.png", "epoch_001.png", "step_0000003.png", "step_0000006.png"]
    for name in ["samples/epoch_001.png", "losses.png", "real_vs_fake.png"]:
        with Image.open(out_dir / name) as image:
            assert image.format == "PNG" and image.width > 200
    with Image.open(out_dir / "training.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 2  # the untrained generator, and one finished epoch
    assert not list(out_dir.rglob("*.tmp"))


def test_a_run_stopped_inside_its_first_epoch_films_its_step_grids(tiny_mnist, tmp_path):
    result = run_script("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--max-steps", "3", *TINY_RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "training.gif") as gif:
        assert gif.n_frames == 2  # the untrained generator's grid, then step 3's


def test_a_short_run_writes_the_checkpoint(short_run):
    _, out_dir = short_run
    checkpoint = torch.load(out_dir / "checkpoint.pt", weights_only=True)
    for key in ["generator", "discriminator", "g_optimizer", "d_optimizer", "epoch", "step", "config"]:
        assert key in checkpoint
    assert checkpoint["step"] == 6 and checkpoint["epoch"] == 1 and checkpoint["batches_into_epoch"] == 2
    assert checkpoint["config"]["batch_size"] == 64 and checkpoint["config"]["z_dim"] == 100
    assert "gen.2.weight" in checkpoint["generator"]


def test_a_short_run_writes_the_metrics_csv(short_run):
    _, out_dir = short_run
    with open(out_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows:
        assert float(row["d_loss"]) > 0 and float(row["g_loss"]) > 0
        assert 0 < float(row["d_x"]) < 1 and 0 < float(row["d_g_z"]) < 1
    history = torch.load(out_dir / "checkpoint.pt", weights_only=True)["history"]
    torch.testing.assert_close(torch.tensor([float(rows[-1]["d_loss"])]), history[-1, :1], atol=1e-5, rtol=0)


def test_constants_edited_in_the_file_take_effect(tiny_mnist, tmp_path):
    # A learner edits the constants at the top instead of passing flags.
    source = SCRIPT.read_text()
    edits = {"EPOCHS = 200 ": "EPOCHS = 1 ", "BATCH_SIZE = 128 ": "BATCH_SIZE = 50 ",
             "BETAS = (0.0, 0.999) ": "BETAS = (0.5, 0.9) ", "GP_GAMMA = 1.0 ": "GP_GAMMA = 0.0 "}
    edited = source
    for old, new in edits.items():
        assert old in edited, old
        edited = edited.replace(old, new)
    script = tmp_path / "gan_mnist.py"
    script.write_text(edited)
    result = run_script("--data-dir", tiny_mnist, "--out-dir", tmp_path / "out", "--device", "cpu", script=script)
    assert result.returncode == 0, result.stderr
    checkpoint = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["step"] == 4  # 200 images / 50
    assert checkpoint["config"]["betas"] == (0.5, 0.9) and checkpoint["config"]["gp_gamma"] == 0.0
    assert checkpoint["d_optimizer"]["param_groups"][0]["betas"] == (0.5, 0.9)  # what Adam really used


def digits_drawn(images, class_means):
    """How many different digits these images show, each read as the digit whose mean image is nearest."""
    return len(torch.cdist(images, class_means).argmin(dim=1).unique())


def test_real_mnist_300_steps_learn_to_draw_many_digits(real_mnist, tmp_path):
    result = run_script("--data-dir", real_mnist, "--out-dir", tmp_path, "--max-steps", "300",
                        "--device", "cpu", "--sample-every", "100")
    assert result.returncode == 0, result.stderr
    line = [line for line in result.stdout.splitlines() if line.startswith("epoch")][-1]
    d_x = float(re.search(r"D\(x\) ([\d.]+)", line).group(1))
    d_g_z = float(re.search(r"D\(G\(z\)\) ([\d.]+)", line).group(1))
    assert d_x > d_g_z, line
    # The 64 grid digits: a generator that learned draws many digits (8 or 9 of 10 at this
    # step, seeds 0-2); an untrained one draws grey blurs read as 2 at most, a collapsed one 1 (measured).
    images, labels = gan_mnist.load_mnist(real_mnist)
    class_means = torch.stack([images[labels == digit].mean(dim=0) for digit in range(10)])
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    trained, untrained = gan_mnist.Generator(), gan_mnist.Generator()
    trained.load_state_dict(checkpoint["generator"])
    with torch.no_grad():
        grid = trained(checkpoint["fixed_noise"])
        assert digits_drawn(grid, class_means) >= 5, "the trained generator's grid shows fewer than 5 digits"
        assert digits_drawn(untrained(checkpoint["fixed_noise"]), class_means) <= 2  # the bar is above that
