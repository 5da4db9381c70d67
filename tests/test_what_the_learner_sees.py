"""The pictures that explain what the GAN learned, the coach's warnings, and the
background writer that keeps drawing off the training path."""
import errno
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gan_mnist
from conftest import TINY_RUN_FLAGS, tensors_in
from test_dependable import run_here


def assert_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200, path


@pytest.fixture(scope="module")
def two_epochs(tiny_mnist, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run") / "out"
    result = run_here("--data-dir", tiny_mnist, "--out-dir", out_dir, "--epochs", "2", *TINY_RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    return result, out_dir


# ---- The after-training pictures ----------------------------------------------------------
def test_a_run_ends_with_the_three_pictures_and_the_copying_check(two_epochs):
    result, out_dir = two_epochs
    for name in ["latent_walk.png", "d_picks.png", "d_scores.png", "nearest_training.png"]:
        assert_png(out_dir / name)
    [line] = [line for line in result.stdout.splitlines() if line.startswith("Copying check")]
    assert "from its nearest training digit" in line and "x; far below 1 would mean copying" in line


def test_the_checkpoint_keeps_d_scores_from_the_start_and_the_end(two_epochs):
    checkpoint = torch.load(two_epochs[1] / "checkpoint.pt", weights_only=True)
    # epoch 1 is both the start and the middle (2 // 2) of this run
    assert list(checkpoint["d_scores"]) == ["epoch 1", "epoch 2"]
    for scores in checkpoint["d_scores"].values():
        assert scores.shape == (2, 70)  # all 70 test digits of tiny MNIST, and as many generated
        assert ((scores > 0) & (scores < 1)).all()


def test_generate_draws_the_three_pictures_with_mnist(two_epochs, tiny_mnist, tmp_path):
    result = run_here("--generate", "16", "--checkpoint", two_epochs[1] / "checkpoint.pt", "--out-dir", tmp_path,
                      "--data-dir", tiny_mnist, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for name in ["generated.png", "latent_walk.png", "d_picks.png", "d_scores.png", "nearest_training.png"]:
        assert_png(tmp_path / name)
    # The checkpoint's own evaluation noise: the same walk as at the end of its run.
    assert (tmp_path / "latent_walk.png").read_bytes() == (two_epochs[1] / "latent_walk.png").read_bytes()


def test_generate_without_mnist_says_which_picture_it_skips(two_epochs, tmp_path):
    result = run_here("--generate", "16", "--checkpoint", two_epochs[1] / "checkpoint.pt", "--out-dir", tmp_path,
                      "--data-dir", tmp_path / "no_mnist", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "no nearest_training.png" in result.stdout and "--data-dir" in result.stdout
    assert_png(tmp_path / "latent_walk.png")
    assert not (tmp_path / "nearest_training.png").exists()


def test_the_latent_walk_goes_from_one_noise_vector_to_the_other_on_the_sphere():
    torch.manual_seed(0)
    start, end = torch.randn(3, 100), torch.randn(3, 100)
    path = gan_mnist.spherical_path(start, end, 7)
    assert path.shape == (3, 7, 100)
    torch.testing.assert_close(path[:, 0], start)
    torch.testing.assert_close(path[:, -1], end)
    lengths = path.norm(dim=-1)  # a straight line's midpoint would be ~30% shorter
    low, high = torch.minimum(start.norm(dim=-1), end.norm(dim=-1)), torch.maximum(start.norm(dim=-1),
                                                                                    end.norm(dim=-1))
    assert ((lengths >= low[:, None] - 1e-4) & (lengths <= high[:, None] + 1e-4)).all()
    generator = gan_mnist.Generator()
    noise = torch.randn(16, 100)
    walk = gan_mnist.latent_walk(generator, noise, rows=8, points=10).reshape(8, 10, 784)
    with torch.no_grad():
        # row r starts at G(z 2r) and ends at G(z 2r+1): the first and last columns of latent_walk.png
        torch.testing.assert_close(walk[:, 0], generator(noise[0:16:2]))
        torch.testing.assert_close(walk[:, -1], generator(noise[1:16:2]))
    assert (walk[:, 1:] - walk[:, :-1]).abs().amax() > 0  # and it does walk


class Copier(torch.nn.Module):
    """A 'generator' that hands back training digits: the copying check must catch it."""

    num_classes = 0

    def __init__(self, training_images):
        super().__init__()
        self.training_images = training_images

    def forward(self, z, labels=None):
        return self.training_images[:len(z)]


def test_the_copying_check_catches_a_generator_that_copies(capsys):
    torch.manual_seed(0)
    training_images, test_images = torch.rand(300, 784) * 2 - 1, torch.rand(40, 784) * 2 - 1
    rows = gan_mnist.check_for_copying(Copier(training_images), torch.randn(40, 100), training_images, test_images)
    line = capsys.readouterr().out
    assert "lies 0.0 from its nearest training digit" in line and "(0.00x;" in line
    assert rows.shape == (8 * 6, 784)  # 8 rows: a generated digit, then its 5 nearest training digits
    # the 8 shown are spread over the 40 samples: row 2 starts with sample 5, training digit 5...
    torch.testing.assert_close(rows[6], training_images[5])
    torch.testing.assert_close(rows[7], training_images[5])  # ...and its nearest training digit is itself


def test_an_honest_generator_is_as_far_from_the_training_digits_as_real_test_digits(capsys):
    torch.manual_seed(0)
    training_images, test_images = torch.rand(300, 784) * 2 - 1, torch.rand(40, 784) * 2 - 1
    new_digits = torch.rand(40, 784) * 2 - 1
    gan_mnist.check_for_copying(Copier(new_digits), torch.randn(40, 100), training_images, test_images)
    ratio = float(capsys.readouterr().out.split("(")[1].split("x;")[0])
    assert 0.9 < ratio < 1.1


# ---- What the pictures hold ------------------------------------------------------------
def known_digits(count=10):
    """Image k: black, a white bar across row 2k + 1, a white top-left pixel (which way up) and a grey one."""
    images = -torch.ones(count, 28, 28)
    for k in range(count):
        images[k, 2 * k + 1, 3:25] = 1
    images[:, 0, 0], images[:, 27, 14] = 1, 0
    return images.reshape(count, 784)


def test_a_grid_puts_digit_k_in_cell_k_right_way_up_between_white_lines():
    images = known_digits()
    grid = gan_mnist.to_picture(images, nrow=4)  # 3 rows of 4, the last with two empty cells
    assert grid.shape == (3 * 30 + 2, 4 * 30 + 2)
    for k in range(12):
        row, column = divmod(k, 4)
        cell = grid[row * 30 + 2:row * 30 + 30, column * 30 + 2:column * 30 + 30]
        expected = (images[k].reshape(28, 28).numpy() + 1) / 2 if k < 10 else np.ones((28, 28))  # empty: white
        np.testing.assert_array_equal(cell, expected, err_msg=f"cell {k}")
    for offset in (0, 1):  # 2-pixel white lines around every cell
        assert (grid[offset::30, :] == 1).all() and (grid[:, offset::30] == 1).all()


def drawn_picture(path, grid):
    """The digits as the PNG shows them, scaled back to one screen pixel a digit pixel, in [0, 1];
    they sit at the bottom, centred, under the title."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255
    scale = next(scale for scale in (3, 2, 1) if grid.shape[1] * scale <= pixels.shape[1]
                 and grid.shape[0] * scale < pixels.shape[0])
    height, width = grid.shape[0] * scale, grid.shape[1] * scale
    left = (pixels.shape[1] - width) // 2
    return pixels[-height:, left:left + width][::scale, ::scale]


def test_the_saved_grid_shows_each_digit_where_it_belongs(tmp_path):
    images = known_digits()
    gan_mnist.draw_digits([("ten known digits", images)], tmp_path / "grid.png", 5)
    grid = gan_mnist.to_picture(images, 5)
    np.testing.assert_allclose(drawn_picture(tmp_path / "grid.png", grid), grid, atol=1 / 255)
    # ...and a grid whose digits are shuffled or turned upside down does not pass for it
    gan_mnist.draw_digits([("shuffled", images[torch.randperm(10, generator=torch.Generator().manual_seed(0))])],
                          tmp_path / "shuffled.png", 5)
    gan_mnist.draw_digits([("upside down", images.reshape(10, 28, 28).flip(1).reshape(10, 784))],
                          tmp_path / "flipped.png", 5)
    for name in ("shuffled.png", "flipped.png"):
        assert np.abs(drawn_picture(tmp_path / name, grid) - grid).max() == 1, name


def as_a_gif_frame(png_path):
    """A PNG in the 256 colours a GIF frame has, as grey levels."""
    with Image.open(png_path) as image:
        return np.asarray(image.convert("P", palette=Image.Palette.ADAPTIVE).convert("L"), dtype=np.float32)


def test_the_gif_has_one_frame_per_epoch_grid_in_order(two_epochs):
    _, out_dir = two_epochs
    grids = sorted((out_dir / "samples").glob("epoch_*.png"))
    with Image.open(out_dir / "training.gif") as gif:
        assert gif.n_frames == len(grids) >= 2
        for frame_number, grid in enumerate(grids):
            gif.seek(frame_number)
            frame = np.asarray(gif.convert("L"), dtype=np.float32)
            differences = [np.abs(frame - as_a_gif_frame(other)).mean() for other in grids]
            assert differences[frame_number] < 0.5 and min(differences) == differences[frame_number], grid.name


def test_everything_drawn_after_a_resume_or_generate_is_on_the_cpu(tiny_mnist, tmp_path, drawn_on):
    # Whatever device trains, a checkpoint comes back on the CPU: D's saved scores, the
    # loss history and the noise are drawn there (the networks' weights go to the device).
    out_dir, common = tmp_path / "out", ["--data-dir", tiny_mnist, *TINY_RUN_FLAGS]
    assert run_here(*common, "--out-dir", out_dir, "--epochs", "1").returncode == 0
    checkpoint = gan_mnist.load_checkpoint(out_dir / "checkpoint.pt")
    assert {tensor.device.type for tensor in tensors_in(checkpoint)} == {"cpu"}
    assert run_here(*common, "--out-dir", out_dir, "--epochs", "2", "--resume").returncode == 0
    assert run_here("--generate", "8", "--out-dir", out_dir, "--data-dir", tiny_mnist,
                    "--device", "cpu").returncode == 0
    assert drawn_on == {"cpu"}


# ---- A picture that cannot be written is a warning ----------------------------------------
def test_a_picture_that_cannot_be_written_warns_and_training_finishes(tiny_mnist, tmp_path, monkeypatch):
    replace = os.replace

    def held_open_by_a_viewer(source, target):  # as Windows refuses to replace a file that is open
        if Path(target).name in {"epoch_001.png", "losses.png"}:
            raise PermissionError(errno.EACCES, "Permission denied")
        return replace(source, target)

    monkeypatch.setattr(gan_mnist.os, "replace", held_open_by_a_viewer)
    result = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "2", *TINY_RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: cannot write")]
    assert [line.split(" (")[0] for line in warnings] == [f"warning: cannot write {tmp_path / name}"
                                                          for name in ("samples/epoch_001.png", "losses.png")]
    assert all("permission denied); the run goes on without it" in line for line in warnings)
    assert result.stdout.splitlines()[-1].startswith("Done: 8 steps")
    assert gan_mnist.load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    assert (tmp_path / "samples" / "epoch_002.png").is_file() and (tmp_path / "training.gif").is_file()
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_writer_warns_once_while_pictures_keep_failing_and_again_after_one_is_written(tmp_path, capsys):
    def full_disk(path):
        raise gan_mnist.write_error(path, OSError(errno.ENOSPC, "No space left on device"))

    files = gan_mnist.BackgroundWriter()
    for name in ("a.png", "b.png", "c.png"):
        files.submit(full_disk, tmp_path / name)
    files.submit(lambda: None)  # one written
    files.submit(full_disk, tmp_path / "d.png")
    files.close()
    warnings = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in warnings] == [f"warning: cannot write {tmp_path / name}"
                                                          for name in ("a.png", "d.png")]
    assert all("(the disk is full)" in line for line in warnings)


def test_the_checkpoint_is_on_the_disk_before_it_replaces_the_last_one(tmp_path, monkeypatch):
    events, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(gan_mnist.os, "fsync", lambda fd: events.append("fsync") or fsync(fd))
    monkeypatch.setattr(gan_mnist.os, "replace", lambda a, b: events.append(f"replace {Path(b).name}") or replace(a, b))
    gan_mnist.write_checkpoint(tmp_path / "checkpoint.pt", b"weights")
    assert events == ["fsync", "replace checkpoint.pt"] and (tmp_path / "checkpoint.pt").read_bytes() == b"weights"


# ---- The coach ---------------------------------------------------------------------------
def epoch_of(d_of_g_z, steps=10):
    """An epoch's per-step metrics, D(G(z)) as given, the rest ordinary."""
    return [torch.tensor([1.0, 1.0, 0.6, d_of_g_z]) for _ in range(steps)]


@pytest.fixture
def real_digits():
    torch.manual_seed(0)
    return torch.rand(200, 784) * 2 - 1


def test_the_coach_says_once_when_the_discriminator_has_won_and_when_it_no_longer_has(real_digits, capsys):
    coach = gan_mnist.Coach(real_digits, gan_mnist.parse_args(["--gp-gamma", "0"]))
    coach.watch_the_game(1, epoch_of(0.3))
    assert capsys.readouterr().out == ""
    coach.watch_the_game(2, epoch_of(0.01))
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("warning: the discriminator has won") and "epoch 2" in line
    assert f"--gp-gamma {gan_mnist.GP_GAMMA:g}" in line  # this run has no penalty: the coach suggests the default
    coach.watch_the_game(3, epoch_of(0.01))
    assert capsys.readouterr().out == ""  # once per episode...
    coach.watch_the_game(4, epoch_of(0.2))
    assert capsys.readouterr().out.splitlines() == [
        "the generator is back in the game: D(G(z)) reached 0.20 in epoch 4"]
    coach.watch_the_game(5, epoch_of(0.02))
    assert "epoch 5" in capsys.readouterr().out  # ...and again when it comes back


def test_one_fair_step_in_the_epoch_is_not_a_won_discriminator(real_digits, capsys):
    coach = gan_mnist.Coach(real_digits, gan_mnist.parse_args([]))
    coach.watch_the_game(1, epoch_of(0.01) + epoch_of(0.2, steps=1))
    assert capsys.readouterr().out == ""


def test_the_coach_says_when_the_samples_collapse_and_when_they_vary_again(real_digits, capsys):
    coach = gan_mnist.Coach(real_digits, gan_mnist.parse_args(["--gp-gamma", "1"]))
    one_picture = real_digits[0] + 0.05 * torch.randn(64, 784)  # nearly the same image for every z
    coach.watch_variety(7, 3200, one_picture)
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("warning: the samples have collapsed: at step 3200 (epoch 7)") and "--seed" in line
    assert "--gp-gamma 4" in line  # the penalty is on: the coach suggests one four times as strong
    coach.watch_variety(7, 3300, one_picture)
    assert capsys.readouterr().out == ""
    coach.watch_variety(8, 3400, real_digits[64:128])
    assert capsys.readouterr().out.splitlines() == ["the samples vary again (1.00x real digits) at step 3400 (epoch 8)"]


def test_the_coach_judges_variety_only_after_its_warm_up():
    coach = gan_mnist.Coach(torch.rand(10, 784), gan_mnist.parse_args([]))
    checked = [step for step in range(1, 1001) if coach.should_check_variety(step)]
    assert checked == list(range(coach.WARM_UP_STEPS, 1001, coach.CHECK_EVERY)) and checked[0] == 500


def test_a_run_whose_generator_ignores_z_is_told_it_collapsed_once_warmed_up(tiny_mnist, tmp_path, monkeypatch):
    forward = gan_mnist.Generator.forward
    monkeypatch.setattr(gan_mnist.Generator, "forward",
                        lambda self, z, labels=None: forward(self, z[:1].expand_as(z), labels))
    # 25 steps an epoch: the warm-up ends at step 500, in epoch 20
    result = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "24", "--batch-size", "8",
                      "--sample-every", "1000", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "the samples have collapsed: at step 500 (epoch 20)" in warnings[0]
    assert "0.00x as much as real digits" in warnings[0]


@pytest.mark.parametrize("batch_size", [32, 1024])
def test_healthy_runs_get_no_warning_at_the_smallest_and_largest_batch(real_mnist, tmp_path, batch_size):
    # 600 steps: the warm-up, then a check or two (the batch sizes between were measured, benchmarks/README.md)
    result = run_here("--data-dir", real_mnist, "--out-dir", tmp_path, "--batch-size", batch_size,
                      "--max-steps", "600", "--sample-every", "1000", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stdout, result.stdout


def test_a_run_whose_generator_never_learns_is_told_the_discriminator_won(tiny_mnist, tmp_path, monkeypatch):
    # G's loss made constant: its gradient is zero, so D alone learns, fast (lr 0.01, no penalty).
    monkeypatch.setattr(gan_mnist, "generator_loss", lambda fake_logits: fake_logits.sum() * 0)
    result = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "12",
                      "--lr", "0.01", "--gp-gamma", "0", *TINY_RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: the discriminator")]
    assert len(warnings) == 1 and f"--gp-gamma {gan_mnist.GP_GAMMA:g}" in warnings[0], result.stdout


# ---- The background writer ---------------------------------------------------------------
def test_the_background_writer_keeps_order_and_hands_on_a_failed_write(tmp_path):
    done = []
    files = gan_mnist.BackgroundWriter()
    for number in range(5):
        files.submit(done.append, number)
    files.close()
    assert done == [0, 1, 2, 3, 4]

    def fails():
        raise gan_mnist.write_error(tmp_path / "losses.png", OSError(28, "No space left on device"))

    files = gan_mnist.BackgroundWriter()
    files.submit(fails, must_succeed=True)  # as the checkpoint is
    files.pending[0].exception()  # wait until it has failed
    with pytest.raises(gan_mnist.RunError, match="the disk is full"):
        files.submit(done.append, 5)  # the training thread hears of it at its next request
    files.submit(done.append, 6)  # once
    files.close()
    assert done[-1] == 6

    files = gan_mnist.BackgroundWriter()
    files.submit(fails, must_succeed=True)
    with pytest.raises(gan_mnist.RunError, match="the disk is full"):
        files.close()  # or at the end


def test_main_lets_queued_writes_finish_before_it_reports_an_error():
    done = []
    files = gan_mnist.BackgroundWriter()
    for number in range(3):
        files.submit(done.append, number)
    gan_mnist.BackgroundWriter.finish_all()
    assert done == [0, 1, 2] and gan_mnist.BackgroundWriter.open_writers == []


def test_training_waits_for_a_writer_that_falls_behind():
    import time

    files = gan_mnist.BackgroundWriter()
    for _ in range(10):  # each job slower than the "training" between them
        files.submit(time.sleep, 0.05)
        assert len(files.pending) <= gan_mnist.BackgroundWriter.MOST_QUEUED
    files.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own CPU priority is Linux's alone")
def test_the_writer_draws_at_the_lowest_priority_and_training_keeps_its_own():
    own_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []
    files = gan_mnist.BackgroundWriter()
    files.submit(lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    files.close()
    assert seen == [19]  # the drawing thread gives way to training's threads
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own_priority
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == own_priority  # the process, and so training, untouched
