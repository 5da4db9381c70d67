"""Dependable runs: repeatable seeds, exact resume, and stops that keep the work (Ctrl-C,
SIGTERM, a closed pipe, a full disk, memory running out). A run that meets the outside world
(signals, limits, a second process, a new interpreter) runs as a user would, in a process of its
own; runs whose numbers are compared go through main() in this process."""
import argparse
import contextlib
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gan_mnist
from conftest import (SCRIPT, TINY_RUN_FLAGS, assert_one_line_error, assert_same_run, load, make_tiny_mnist,
                      run_here, snapshot, stop_at_step, train)


# ---- Repeatable and resumable ---------------------------------------------------------
# A penalty every 3rd step: steps 0, 3 and 6 of these 8-step runs take it, one of
# them right where the mid-epoch resume below picks up.
PENALTY_OFTEN = ["--gp-gamma", "1", "--gp-every", "3"]


def test_same_seed_repeats_exactly_on_cpu(tiny_mnist, tmp_path):
    first = train(tiny_mnist, tmp_path / "a", "--epochs", "2", *PENALTY_OFTEN, own_process=True)  # as a user reruns
    second = train(tiny_mnist, tmp_path / "b", "--epochs", "2", *PENALTY_OFTEN)
    assert_same_run(first, second)
    other_seed = train(tiny_mnist, tmp_path / "c", "--epochs", "2", *PENALTY_OFTEN, "--seed", "1")
    assert not torch.equal(first["generator"]["gen.0.weight"], other_seed["generator"]["gen.0.weight"])


def intel_cpu_with_avx2():
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "GenuineIntel" in cpuinfo and " avx2" in cpuinfo


@pytest.mark.skipif(not intel_cpu_with_avx2(), reason="MKL documents thread-independent sums (strict CNR) "
                                                      "only for Intel CPUs with AVX2 or AVX-512")
def test_same_seed_repeats_exactly_on_any_number_of_threads(tiny_mnist, tmp_path):
    # Without the script's MKL_CBWR setting, 1 and 2 threads add up matrix
    # products in different orders and the weights differ in the last digits.
    one = train(tiny_mnist, tmp_path / "a", "--epochs", "2", env={"OMP_NUM_THREADS": "1", "MKL_CBWR": None})
    two = train(tiny_mnist, tmp_path / "b", "--epochs", "2", env={"OMP_NUM_THREADS": "2", "MKL_CBWR": None})
    assert_same_run(one, two)


def test_resume_after_an_epoch_matches_a_straight_run(tiny_mnist, tmp_path):
    straight = train(tiny_mnist, tmp_path / "straight", "--epochs", "2")
    train(tiny_mnist, tmp_path / "split", "--epochs", "1")
    resumed = train(tiny_mnist, tmp_path / "split", "--epochs", "2", "--resume")
    assert resumed["step"] == straight["step"] == 8
    assert_same_run(straight, resumed)


def test_resume_from_the_middle_of_an_epoch_matches_a_straight_run(tiny_mnist, tmp_path):
    straight = train(tiny_mnist, tmp_path / "straight", "--epochs", "2", *PENALTY_OFTEN)
    train(tiny_mnist, tmp_path / "split", "--epochs", "2", "--max-steps", "6", *PENALTY_OFTEN)  # stops in epoch 2
    resumed = train(tiny_mnist, tmp_path / "split", "--epochs", "2", "--resume", *PENALTY_OFTEN)
    assert_same_run(straight, resumed)
    assert (tmp_path / "split" / "metrics.csv").read_text() == (tmp_path / "straight" / "metrics.csv").read_text()


def test_resume_refuses_a_changed_model_or_batch_size(finished_run):
    data, out_dir = finished_run
    before = snapshot(out_dir)
    for flag, value in [("--hidden-dim", "128"), ("--batch-size", "32"), ("--z-dim", "10"), ("--gp-gamma", "5.0")]:
        result = run_here("--data-dir", data, "--out-dir", out_dir, "--resume", "--epochs", "3",
                          *TINY_RUN_FLAGS, flag, value)
        assert_one_line_error(result, flag, value)
    result = run_here("--data-dir", data, "--out-dir", out_dir, "--resume", "--epochs", "3",
                      *TINY_RUN_FLAGS, "--article-pixels")
    assert_one_line_error(result, "trained with --no-article-pixels, this run asks for --article-pixels")
    assert snapshot(out_dir) == before


@pytest.mark.parametrize("epochs", [["--epochs", "1"], []], ids=["same-epochs", "bare-resume"])
def test_resuming_a_finished_run_says_so(finished_run, epochs):
    data, out_dir = finished_run  # a one-epoch run: a bare --resume keeps its --epochs 1, not EPOCHS
    before = snapshot(out_dir)
    result = run_here("--data-dir", data, "--out-dir", out_dir, "--resume", *epochs, *TINY_RUN_FLAGS)
    assert result.returncode == 0
    assert "finished (--epochs 1; done: 1)" in result.stdout and "--resume --epochs N" in result.stdout
    assert snapshot(out_dir) == before


def test_a_bare_resume_finishes_the_run_it_was_asked_to_be(tiny_mnist, tmp_path):
    train(tiny_mnist, tmp_path, "--epochs", "3", "--max-steps", "6")  # stopped in epoch 2 of 3
    resumed = train(tiny_mnist, tmp_path, "--resume")
    assert (resumed["epoch"], resumed["step"], resumed["epochs"]) == (3, 12, 3)
    further = train(tiny_mnist, tmp_path, "--resume", "--epochs", "4")  # a new --epochs goes further
    assert (further["epoch"], further["step"], further["epochs"]) == (4, 16, 4)


def test_a_new_run_will_not_overwrite_an_earlier_one(finished_run):
    data, out_dir = finished_run
    before = snapshot(out_dir)
    result = run_here("--data-dir", data, "--out-dir", out_dir, "--epochs", "1", *TINY_RUN_FLAGS)
    assert_one_line_error(result, "--resume", "--overwrite")
    assert snapshot(out_dir) == before


# ---- Ctrl-C and SIGTERM --------------------------------------------------------------
def start_long_run(data, out_dir, *extra):
    """A run that would go on for ages, returned once its first epoch is logged."""
    process = subprocess.Popen(
        [sys.executable, "-u", str(SCRIPT), "--data-dir", str(data), "--out-dir", str(out_dir),
         "--epochs", "100000", *TINY_RUN_FLAGS, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # wait until training is under way
        if line.startswith("epoch"):
            break
    return process


@pytest.mark.parametrize("stop_signal, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_saves_then_resume_finishes(tiny_mnist, tmp_path, stop_signal, exit_code):
    out_dir = tmp_path / "out"
    process = start_long_run(tiny_mnist, out_dir)
    process.send_signal(stop_signal)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stdout
    saved = load(out_dir)
    for name in ["checkpoint.pt", "losses.png", "metrics.csv", "samples/epoch_001.png"]:
        assert (out_dir / name).is_file(), name
    assert not list(out_dir.rglob("*.tmp"))
    assert saved["step"] >= 4
    # ...and the run carries on from where it stopped.
    finish_at = saved["epoch"] + 2
    resumed = train(tiny_mnist, out_dir, "--epochs", str(finish_at), "--resume")
    assert resumed["epoch"] == finish_at and resumed["step"] == 4 * finish_at
    assert len(resumed["history"]) == resumed["step"]


def test_ctrl_c_in_this_process_prints_the_command_main_was_given(tiny_mnist, tmp_path, monkeypatch):
    stop_at_step(monkeypatch, 5)
    result = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "3", *TINY_RUN_FLAGS)
    assert result.returncode == 130
    assert "Ctrl-C: saving after this step" in result.stdout  # said by the loop, after the handler noted it
    command = result.stdout.strip().splitlines()[-1].split("Continue with:  ")[1]
    assert command == (f"python gan_mnist.py --data-dir {tiny_mnist} --out-dir {tmp_path} --epochs 3 "
                       + " ".join(TINY_RUN_FLAGS) + " --resume")  # not the test runner's own arguments


def test_the_signal_handler_only_notes_the_signal(capsys):
    stops = gan_mnist.StopSignals()
    try:
        stops.handle(signal.SIGINT, None)
    finally:
        stops.restore()
    assert stops.received == signal.SIGINT and capsys.readouterr().out == ""  # a print there can break the one it interrupts


def test_the_signal_handlers_are_given_back_when_a_run_fails(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(gan_mnist, "discriminator_loss", lambda real, fake: real.sum() * float("nan"))
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "2", *TINY_RUN_FLAGS)
    assert result.returncode == 1 and "NaN" in result.stderr
    # else the next Ctrl-C in this process (a notebook, a test run) would be swallowed
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_main_twice_in_one_process_on_one_folder(tiny_mnist, tmp_path):
    # as a notebook does: train, then continue, in the same process
    common = ["--data-dir", tiny_mnist, "--out-dir", tmp_path, *TINY_RUN_FLAGS]
    for extra in (["--epochs", "1"], ["--epochs", "2", "--resume"]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            with pytest.raises(SystemExit) as exited:
                gan_mnist.main([*common, *extra])
        assert exited.value.code == 0, err.getvalue()
    assert load(tmp_path)["epoch"] == 2 and gan_mnist.HELD_LOCKS == []


# ---- Faults during a run: one line, no temporary file, the last checkpoint kept --------
def run_with(setup, *args, limits=None):
    """Run gan_mnist.main(ARGS) in a child process after `setup` (Python source) has run there."""
    code = (f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import gan_mnist\n{setup}\n"
            f"gan_mnist.main({[str(arg) for arg in args]!r})")

    def apply_limits():
        import resource
        for limit, value in (limits or {}).items():
            resource.setrlimit(limit, (value, value))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          preexec_fn=apply_limits)


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """Tiny MNIST, the checkpoint of a 3-epoch run that nothing interrupted, and
    a folder holding the same run after its first epoch, for faults to strike."""
    data = make_tiny_mnist(tmp_path_factory.mktemp("data"))
    one_epoch = tmp_path_factory.mktemp("one_epoch") / "out"
    train(data, one_epoch, "--epochs", "1")
    return data, train(data, tmp_path_factory.mktemp("straight"), "--epochs", "3"), one_epoch


def after_one_epoch(three_epochs, tmp_path):
    import shutil

    return shutil.copytree(three_epochs[2], tmp_path / "out")


def assert_resumes_exactly_after_a_fault(three_epochs, out_dir):
    """The checkpoint left after a fault is epoch 1's, whole, and resumes to the end of a straight run."""
    data, straight, _ = three_epochs
    assert not list(out_dir.rglob("*.tmp"))
    assert load(out_dir)["step"] == 4
    assert_same_run(straight, train(data, out_dir, "--epochs", "3", "--resume"))


def test_a_file_size_limit_mid_run_keeps_the_last_checkpoint(three_epochs, tmp_path):
    import resource

    tiny_mnist, out_dir = three_epochs[0], after_one_epoch(three_epochs, tmp_path)
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG; the
    # checkpoint (megabytes) cannot be written, the pictures (kilobytes) can.
    result = run_with("", "--data-dir", tiny_mnist, "--out-dir", out_dir, "--epochs", "3", "--resume",
                      *TINY_RUN_FLAGS, limits={resource.RLIMIT_FSIZE: 500_000})
    assert_one_line_error(result, f"cannot write {out_dir / 'checkpoint.pt'}", "file too large", "--resume")
    assert_resumes_exactly_after_a_fault(three_epochs, out_dir)


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(three_epochs, tmp_path):
    tiny_mnist, out_dir = three_epochs[0], after_one_epoch(three_epochs, tmp_path)
    # The resumed run's first checkpoint fills the disk: its bytes sit in the cache, and the
    # flush to the disk (fsync) says there is no room, as a full disk does.
    disk_fills = ("import errno, os\n"
                  "def full_disk(fd):\n"
                  "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
                  "os.fsync = full_disk")
    result = run_with(disk_fills, "--data-dir", tiny_mnist, "--out-dir", out_dir, "--epochs", "3", "--resume",
                      *TINY_RUN_FLAGS)
    assert_one_line_error(result, "checkpoint.pt", "no space left on device", "--resume")
    assert_resumes_exactly_after_a_fault(three_epochs, out_dir)


def test_running_out_of_memory_while_building_the_networks_gets_one_line(tiny_mnist, tmp_path):
    import resource

    # 100 x 10^8 weights in G's first layer alone: 40 GB, more than the 8 GB this child may have.
    result = run_with("", "--data-dir", tiny_mnist, "--out-dir", tmp_path, "--hidden-dim", "100000000",
                      *TINY_RUN_FLAGS, limits={resource.RLIMIT_AS: 8 * 2**30})
    assert_one_line_error(result, "memory ran out (it asked for 37.3 GiB more)",
                          "--hidden-dim (now 100000000)", "--batch-size", "close other programs")


@pytest.mark.parametrize("words", [
    "DefaultCPUAllocator: can't allocate memory: you tried to allocate 40000000000 bytes. Error code 12",  # Linux
    "DefaultCPUAllocator: not enough memory: you tried to allocate 40000000000 bytes.",  # Windows
    "CUDA out of memory. Tried to allocate 37.25 GiB"], ids=["linux-cpu", "windows-cpu", "cuda"])
def test_each_allocators_out_of_memory_words_get_one_line(words, tmp_path):
    args = argparse.Namespace(out_dir=tmp_path, hidden_dim=256, batch_size=128)
    line = gan_mnist.out_of_memory_error(RuntimeError(words), args)
    assert line and line.startswith("memory ran out (it asked for 37.") and "--hidden-dim (now 256)" in line
    assert gan_mnist.out_of_memory_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), args) is None


def test_running_out_of_memory_in_a_step_keeps_the_last_checkpoint(three_epochs, tmp_path):
    tiny_mnist, out_dir = three_epochs[0], tmp_path / "out"
    # The 7th step (in epoch 2) runs out of GPU memory, as a too-large model would.
    step_runs_out = ("import torch\nloss, calls = gan_mnist.discriminator_loss, []\n"
                     "def hungry(*args):\n"
                     "    calls.append(1)\n"
                     "    if len(calls) == 7:\n"
                     "        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')\n"
                     "    return loss(*args)\n"
                     "gan_mnist.discriminator_loss = hungry")
    result = run_with(step_runs_out, "--data-dir", tiny_mnist, "--out-dir", out_dir, "--epochs", "3",
                      *TINY_RUN_FLAGS)
    assert_one_line_error(result, "memory ran out (it asked for 20.00 GiB more)",
                          "--device cpu", f"the last whole checkpoint in {out_dir}/ is kept")
    assert_resumes_exactly_after_a_fault(three_epochs, out_dir)


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_trains(tiny_mnist, tmp_path):
    out_dir = tmp_path / "out"
    first = start_long_run(tiny_mnist, out_dir)
    try:
        second = run_here("--data-dir", tiny_mnist, "--out-dir", out_dir, "--overwrite", *TINY_RUN_FLAGS)
        assert_one_line_error(second, "another run is training", str(out_dir), "--out-dir")
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130
    assert load(out_dir)["step"] >= 4  # its checkpoint, not the second run's fresh start


def test_an_output_folder_deleted_mid_run_is_made_again(tiny_mnist, tmp_path):
    import shutil

    out_dir = tmp_path / "out"
    process = start_long_run(tiny_mnist, out_dir)
    shutil.rmtree(out_dir)
    for line in process.stdout:  # the next epoch's files land in a new folder
        if line.startswith("epoch"):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert load(out_dir)["step"] >= 8
    assert (out_dir / "losses.png").is_file()
    rows = (out_dir / "metrics.csv").read_text().splitlines()  # written whole again, not just its newest rows
    assert rows[0].startswith("step,") and len(rows) == 1 + load(out_dir)["step"]




# ---- A reader that stops early, and checkpoints of the version before ----------------------
@pytest.mark.parametrize("both", [False, True], ids=["stdout", "stdout and stderr"])
def test_a_reader_that_stops_early_stops_the_run_and_keeps_the_work(tiny_mnist, tmp_path, both):
    # `python gan_mnist.py | head -1` (or `2>&1 | head -1`): the reader takes the first line and closes the pipe.
    out_dir = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--data-dir", str(tiny_mnist), "--out-dir", str(out_dir),
                                "--epochs", "100000", *TINY_RUN_FLAGS], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT if both else subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("Training on")
    process.stdout.close()
    stderr = "" if both else process.stderr.read()
    assert process.wait(timeout=60) == 141, stderr  # the shell's code for a closed pipe
    if not both:
        [line] = stderr.strip().splitlines()  # no traceback, nothing ignored at exit: one line, on standard error
        assert line.startswith("Stopped at step") and line.endswith("--resume")
    saved = load(out_dir)
    assert saved["step"] >= 4 and not list(out_dir.rglob("*.tmp"))
    resumed = train(tiny_mnist, out_dir, "--epochs", str(saved["epoch"] + 1), "--resume")
    assert resumed["step"] == 4 * (saved["epoch"] + 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_checkpoint_of_the_earlier_data_order_still_draws_and_resumes(tiny_mnist, tmp_path, seed):
    saved = train(tiny_mnist, tmp_path, "--epochs", "1", "--seed", str(seed))
    # as the earliest version that shuffled by seed + epoch wrote it, before the penalty, the article's pixels,
    # the conditional GAN and D's scores: it goes on, in the new order, as it was trained
    saved.update(format="gan_mnist checkpoint v1", rng={"cpu": saved["rng"]["cpu"]})
    del saved["d_scores"]
    saved["config"] = {name: value for name, value in saved["config"].items()
                       if name not in ("gp_gamma", "gp_every", "article_pixels", "num_classes")}
    torch.save(saved, tmp_path / "checkpoint.pt")
    assert run_here("--generate", "8", "--out-dir", tmp_path, "--data-dir", tiny_mnist).returncode == 0
    resumed = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "2", "--resume", *TINY_RUN_FLAGS,
                       "--gp-gamma", "0", "--gp-every", "1", "--seed", str(seed))
    assert resumed.returncode == 0, resumed.stderr
    # seed + epoch and seed * 1_000_000 + epoch agree for seed 0 alone: any other seed is told its order changed
    assert ("note: seed 1's data order changed" in resumed.stdout) == (seed == 1), resumed.stdout
    assert load(tmp_path)["step"] == 8 and load(tmp_path)["format"] == "gan_mnist checkpoint v2"
