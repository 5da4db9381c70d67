"""The benchmark tools run and report sensible figures (no timing is asserted)."""
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402


def run_tool(name, *args):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_speed_benchmark_prints_the_table_and_ratios(tiny_mnist):
    output = run_tool("speed.py", "--data-dir", tiny_mnist, "--device", "cpu", "--steps", "5", "--repeats", "1")
    assert re.search(r"A  article's loop\s+[\d,.]+ \[", output)
    assert re.search(r"B  gan_mnist.py\s+[\d,.]+ \[", output)
    assert re.search(r"speed-up B/A: [\d.]+x", output)
    assert re.search(r"ceiling: [^\n]* [\d.]+x A", output)
    assert re.search(r"floor \(B's matrix products alone\): [\d.]+ ms/step; B takes [\d.]+ ms/step = [\d.]+x", output)
    peak_rss = [float(value.replace(",", "")) for value in re.findall(r"([\d,.]+) MB \[", output)]
    assert len(peak_rss) == 2 and all(100 < mb < 20000 for mb in peak_rss)


def test_the_floor_lists_every_matrix_product_of_the_step():
    # Count the products autograd really runs in one train_step on the CPU.
    import gan_mnist
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    generator, discriminator = gan_mnist.Generator(), gan_mnist.Discriminator()
    optimizers = gan_mnist.make_optimizers(generator, discriminator, 2e-4, (0.5, 0.999))
    real = torch.rand(128, 784) * 2 - 1
    gan_mnist.train_step(generator, discriminator, *optimizers, real)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        gan_mnist.train_step(generator, discriminator, *optimizers, real)
    products = sum(event.count for event in profiler.key_averages() if event.key in ("aten::mm", "aten::addmm"))
    import speed
    assert products == len(speed.step_matmul_shapes(128))


def test_frechet_distance_is_zero_for_the_same_set_and_grows_with_a_shift():
    features = torch.randn(2000, 8, generator=torch.Generator().manual_seed(0))
    assert abs(quality.frechet_distance(features, features)) < 1e-6
    shifted = quality.frechet_distance(features, features + 3.0)
    assert shifted == pytest.approx(8 * 3.0 ** 2, rel=1e-4)  # |mean shift|^2; covariances equal


def test_quality_tool_scores_a_checkpoint_and_caches_its_classifier(tiny_mnist, tmp_path):
    from conftest import TINY_RUN_FLAGS, run_script

    assert run_script("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "1", *TINY_RUN_FLAGS).returncode == 0
    args = [tmp_path / "checkpoint.pt", "--data-dir", tiny_mnist, "--cache-dir", tmp_path / "cache",
            "--samples", "100", "--classifier-epochs", "1", "--grids", tmp_path / "grids"]
    first = run_tool("quality.py", *args)
    assert "Training the digit classifier" in first
    assert len(list((tmp_path / "cache").glob("quality_classifier_*.pt"))) == 1
    second = run_tool("quality.py", *args)
    assert "Training the digit classifier" not in second  # cached
    rows = {line.split()[0]: line for line in second.splitlines() if line.startswith(("real", "checkpoint"))}
    figures = rows["checkpoint.pt"].split()
    fid, score, confident = float(figures[1]), float(figures[2]), float(figures[3].rstrip("%"))
    shares = [float(share) for share in figures[4:]]
    assert fid > 0 and 1 <= score <= 10 and 0 <= confident <= 100
    assert len(shares) == 10 and sum(shares) == pytest.approx(100, abs=0.5)
    assert re.search(r"digit classifier: [\d.]+% correct", second)
    assert (tmp_path / "grids" / "checkpoint.png").is_file()
