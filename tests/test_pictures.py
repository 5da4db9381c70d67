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
from conftest import TINY_RUN_FLAGS, run_here, tensors_in


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


class Identity(torch.nn.Module):
    """A stand-in generator that draws its noise: the latent walk then shows the path itself."""

    def forward(self, z, labels=None):
        return z


def test_the_latent_walk_goes_from_one_noise_vector_to_the_next_on_the_sphere():
    torch.manual_seed(0)
    noise = torch.randn(20, 100)
    path = gan_mnist.latent_walk(Identity(), noise).reshape(10, 10, 100)  # 10 rows of 10
    torch.testing.assert_close(path[:, 0], noise[0:20:2])  # row r starts at z 2r...
    torch.testing.assert_close(path[:, -1], noise[1:20:2])  # ...and ends at z 2r+1
    lengths = path.norm(dim=-1)  # on the sphere: a straight line's midpoint would be ~30% shorter
    ends = torch.stack([noise[0:20:2].norm(dim=-1), noise[1:20:2].norm(dim=-1)])
    assert ((lengths >= ends.min(dim=0).values[:, None] - 1e-4) & (lengths <= ends.max(dim=0).values[:, None] + 1e-4)).all()
    assert (path[:, 1:] - path[:, :-1]).abs().amax() > 0  # and it does walk
    walk = gan_mnist.latent_walk(gan_mnist.ConditionalGenerator(), noise).reshape(10, 10, 784)
    assert walk.shape == (10, 10, 784)  # a conditional GAN's row r is digit r, all ten of them


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


def test_a_folder_or_a_stray_file_named_like_a_grid_is_left_out_of_the_film(tiny_mnist, tmp_path):
    out_dir = tmp_path / "out"
    (out_dir / "samples" / "epoch_009.png").mkdir(parents=True)  # a folder under a grid's name: left where it is
    result = run_here("--data-dir", tiny_mnist, "--out-dir", out_dir, "--epochs", "1", *TINY_RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    (out_dir / "samples" / "epoch_005.png").write_text("not a picture")  # a resumed run keeps what it finds
    result = run_here("--data-dir", tiny_mnist, "--out-dir", out_dir, "--epochs", "2", "--resume", *TINY_RUN_FLAGS)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    with Image.open(out_dir / "training.gif") as gif:
        assert gif.n_frames == 3  # epoch_000.png to epoch_002.png; what is not a grid is left out


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
    def refused(path, number=errno.ENOSPC):
        raise gan_mnist.WriteError(path, OSError(number, os.strerror(number)))

    files = gan_mnist.BackgroundWriter()
    for name in ("a.png", "b.png", "c.png"):  # a full disk: said once, not for every picture
        files.submit(refused, tmp_path / name)
    files.submit(refused, tmp_path / "d.png", errno.EACCES)  # another trouble
    files.submit(lambda: None, must_succeed=True)  # a checkpoint written: the pictures' trouble goes on
    files.submit(refused, tmp_path / "d2.png", errno.EACCES)  # (said already)
    files.submit(lambda: None)  # a picture written: the trouble is over...
    files.submit(refused, tmp_path / "e.png", errno.EACCES)  # ...so when it comes back, it is said again
    files.close()
    warnings = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in warnings] == [f"warning: cannot write {tmp_path / name}"
                                                          for name in ("a.png", "d.png", "e.png")]
    assert "(no space left on device); the run goes on without it" in warnings[0]
    assert "(permission denied); the run goes on without it" in warnings[1]


def test_the_checkpoint_is_on_the_disk_before_it_replaces_the_last_one(tmp_path, monkeypatch):
    events, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(gan_mnist.os, "fsync", lambda fd: events.append("fsync") or fsync(fd))
    monkeypatch.setattr(gan_mnist.os, "replace", lambda a, b: events.append(f"replace {Path(b).name}") or replace(a, b))
    gan_mnist.write_atomically(tmp_path / "checkpoint.pt", lambda file: file.write(b"weights"))
    assert events == ["fsync", "replace checkpoint.pt"] and (tmp_path / "checkpoint.pt").read_bytes() == b"weights"


# ---- The background writer ---------------------------------------------------------------
def test_the_background_writer_keeps_order_and_hands_on_a_failed_write(tmp_path):
    done = []
    files = gan_mnist.BackgroundWriter()
    for number in range(5):
        files.submit(done.append, number)
    files.close()
    assert done == [0, 1, 2, 3, 4]

    def fails():
        raise gan_mnist.WriteError(tmp_path / "losses.png", OSError(28, "No space left on device"))

    files = gan_mnist.BackgroundWriter()
    files.submit(fails, must_succeed=True)  # as the checkpoint is
    files.pending[0].exception()  # wait until it has failed
    with pytest.raises(gan_mnist.RunError, match="no space left on device"):
        files.submit(done.append, 5)  # the training thread hears of it at its next request
    files.submit(done.append, 6)  # once
    files.close()
    assert done[-1] == 6

    files = gan_mnist.BackgroundWriter()
    files.submit(fails, must_succeed=True)
    with pytest.raises(gan_mnist.RunError, match="no space left on device"):
        files.close()  # or at the end


def test_a_write_error_offers_resume_only_for_the_runs_own_files(tmp_path):
    full = OSError(28, "No space left on device")
    assert "--resume" in str(gan_mnist.WriteError(tmp_path / "checkpoint.pt", full))
    assert "--resume" not in str(gan_mnist.WriteError(tmp_path / "generated.png", full))  # --generate's picture


def test_a_run_that_fails_lets_its_queued_writes_finish_first(tmp_path):
    import time

    done = []
    with pytest.raises(RuntimeError, match="a bug"):
        with gan_mnist.RunRecord(gan_mnist.parse_args(["--out-dir", str(tmp_path)])) as run:
            run.files.submit(lambda: time.sleep(0.3) or done.append("the checkpoint"))
            raise RuntimeError("a bug")
    while gan_mnist.HELD_LOCKS:  # as main() would, on its way out
        os.close(gan_mnist.HELD_LOCKS.pop())
    assert done == ["the checkpoint"]  # on the disk before the error is reported


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
