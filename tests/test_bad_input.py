"""Every bad input gets one line: exit 2, no traceback, and nothing overwritten."""
import pytest
import torch

from conftest import TINY_RUN_FLAGS, assert_one_line_error, make_tiny_mnist, run_here, snapshot


# ---- Bad input: one line, exit 2, no traceback, nothing overwritten ------------------
BAD_SETTINGS = [
    (["--epochs", "0"], ["--epochs"]),
    (["--epochs", "2.5"], ["--epochs", "2.5"]),
    (["--batch-size", "-1"], ["--batch-size"]),
    (["--max-steps", "0"], ["--max-steps"]),
    (["--sample-every", "abc"], ["--sample-every", "abc"]),
    (["--lr", "0"], ["--lr"]),
    (["--lr", "fast"], ["--lr", "fast"]),
    (["--lr", "nan"], ["--lr"]),
    (["--betas", "1.0", "0.999"], ["--betas", "[0, 1)"]),
    (["--betas", "0.5", "-0.1"], ["--betas"]),
    (["--gp-gamma", "-1"], ["--gp-gamma", "at least 0"]),
    (["--gp-gamma", "inf"], ["--gp-gamma"]),
    (["--gp-every", "0"], ["--gp-every"]),
    (["--device", "tpu"], ["--device", "tpu"]),
    (["--generate", "0"], ["--generate"]),
    (["--seed", "-1"], ["--seed must be a whole number from 0 to 4294967295, not -1"]),
]


@pytest.mark.parametrize("flags, words", BAD_SETTINGS, ids=[" ".join(flags) for flags, _ in BAD_SETTINGS])
def test_bad_settings_get_one_line(finished_run, flags, words):
    data, out_dir = finished_run
    before = snapshot(out_dir)
    result = run_here("--data-dir", data, "--out-dir", out_dir, "--overwrite", *flags)
    assert_one_line_error(result, *words)
    assert snapshot(out_dir) == before


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_a_missing_gpu_gets_one_line(finished_run, device):
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if available:
        pytest.skip(f"this machine has {device}")
    data, out_dir = finished_run
    before = snapshot(out_dir)
    result = run_here("--data-dir", data, "--out-dir", out_dir, "--overwrite", "--device", device)
    assert_one_line_error(result, f"--device {device}", "--device cpu")
    assert snapshot(out_dir) == before


def test_missing_mnist_without_network_names_folder_and_files(finished_run, tmp_path):
    _, out_dir = finished_run
    before = snapshot(out_dir)
    # No network here (or a blocked one): the download fails, and the message says what to do.
    result = run_here("--data-dir", tmp_path / "empty", "--out-dir", out_dir, "--overwrite",
                      "--device", "cpu", "--max-steps", "1")
    if result.returncode == 0:
        pytest.skip("MNIST could be downloaded: this machine has a network")
    assert_one_line_error(result, str(tmp_path / "empty" / "MNIST" / "raw"), "train-images-idx3-ubyte",
                          "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    assert snapshot(out_dir) == before


@pytest.mark.parametrize("damage", ["truncated", "not_idx"])
def test_damaged_mnist_files_get_one_line(finished_run, tmp_path, damage):
    _, out_dir = finished_run
    data = make_tiny_mnist(tmp_path / "data")
    images = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:5000])
    else:
        images.write_text("<html>404 Not Found</html>" * 100)
    before = snapshot(out_dir)
    result = run_here("--data-dir", data, "--out-dir", out_dir, "--overwrite", "--device", "cpu")
    assert_one_line_error(result, f"cannot read MNIST from {images.parent}/", "missing or damaged", "fresh copies")
    assert snapshot(out_dir) == before


def test_an_unwritable_output_folder_is_caught_before_training(tiny_mnist, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # a folder cannot be made inside a file, even by root
    result = run_here("--data-dir", tiny_mnist, "--out-dir", blocker / "outputs", "--device", "cpu")
    assert_one_line_error(result, "cannot write", str(blocker / "outputs"), "--out-dir")
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("mode", ["--resume", "--generate"])
@pytest.mark.parametrize("problem", ["missing", "empty", "unreadable", "not_ours", "another_version"])
def test_bad_checkpoints_get_one_line(tiny_mnist, tmp_path, mode, problem):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    checkpoint = out_dir / "checkpoint.pt"
    if problem == "empty":  # torch.load raises an error with no words: EOFError('')
        checkpoint.write_bytes(b"")
    elif problem == "unreadable":
        checkpoint.write_bytes(b"\x00garbage" * 100)
    elif problem == "not_ours":
        torch.save({"state_dict": {"weight": torch.zeros(2)}}, checkpoint)
    elif problem == "another_version":
        torch.save({"format": "gan_mnist checkpoint v99", "generator": {}}, checkpoint)
    before = snapshot(out_dir)
    flags = ["--resume", "--epochs", "2", *TINY_RUN_FLAGS] if mode == "--resume" else ["--generate", "8"]
    result = run_here("--data-dir", tiny_mnist, "--out-dir", out_dir, *flags)
    words = {"missing": ["no checkpoint", str(checkpoint)], "empty": ["cannot read", str(checkpoint), "EOFError"],
             "unreadable": ["cannot read", str(checkpoint)],
             "not_ours": ["not a gan_mnist checkpoint", str(checkpoint)],
             "another_version": ["another version of gan_mnist.py", "v99", "--overwrite"]}[problem]
    assert_one_line_error(result, *words)
    assert snapshot(out_dir) == before


def test_a_diverging_run_stops_with_the_step_and_a_hint(finished_run, tmp_path):
    data, _ = finished_run
    # Adam moves each weight by about lr per step: 1e38 overflows float32 at once.
    result = run_here("--data-dir", data, "--out-dir", tmp_path, "--epochs", "3", "--lr", "1e38", *TINY_RUN_FLAGS)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert "NaN or infinite at step 1" in line and "--lr 1e+37" in line
    assert "--overwrite --lr" in line  # a new run: --resume keeps the checkpoint's --lr
    assert not (tmp_path / "checkpoint.pt").exists()  # no checkpoint of the broken weights
