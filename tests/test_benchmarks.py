"""The benchmark tools run and report sensible figures (no timing is asserted)."""
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY_RUN_FLAGS, run_here, run_tool

sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402


def test_speed_benchmark_prints_the_table_and_ratios(tiny_mnist):
    output = run_tool("speed.py", "--data-dir", tiny_mnist, "--device", "cpu", "--steps", "5", "--repeats", "1",
                      "--whole-run-repeats", "2")
    assert re.search(r"A  article's loop\s+[\d,.]+ \[", output)
    assert re.search(r"B  gan_mnist.py\s+[\d,.]+ \[", output)
    assert re.search(r"speed-up B/A: [\d.]+x", output)
    assert re.search(r"ceiling: [^\n]* [\d.]+x A", output)
    assert re.search(r"floor \(B's matrix products alone\): [\d.]+ ms/step; B takes [\d.]+ ms/step = [\d.]+x", output)
    assert re.search(r"fixed cost \(B's step on a batch of 1 image[^)]*\): [\d.]+ ms/step; "
                     r"floor \+ fixed cost = [\d.]+ ms = [\d.]+x the floor", output)
    assert re.search(r"B  without the penalty\s+[\d,.]+ \[", output)
    assert re.search(r"the gradient penalty's cost \(every \d+ steps\): B's step takes [\d.]+x \[", output)
    # the whole run, every picture drawn, against its steps alone
    assert re.search(r"^whole run: 3 epochs \(6 steps\) of `python gan_mnist.py` took [\d.]+ s from the first step, "
                     r"its steps alone [\d.]+ s: [\d.]+x the time of its steps; "
                     r"drawing and writing: -?[\d.]+% of the run$", output, re.MULTILINE)
    assert re.search(r"per epoch after the first: [\d.]+ s, its steps alone [\d.]+ s \(-?[\d.]+% drawing and writing; "
                     r"-?[\d.,]+% \[-?[\d.,]+ \.\. -?[\d.,]+\] over the 2 pairs\)", output)
    assert re.search(r"a 200-epoch default run spends -?[\d.]+% of its time drawing and writing$", output, re.MULTILINE)
    peak_rss = [float(value.replace(",", "")) for value in re.findall(r"([\d,.]+) MB \[", output)]
    assert len(peak_rss) == 3 and all(100 < mb < 20000 for mb in peak_rss)


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
    assert run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "1", *TINY_RUN_FLAGS).returncode == 0
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
    shares = [float(share) for share in figures[4:14]]
    assert figures[14].startswith("(") and figures[15] == "s)"  # how long drawing the samples took
    assert fid > 0 and 1 <= score <= 10 and 0 <= confident <= 100
    assert len(shares) == 10 and sum(shares) == pytest.approx(100, abs=0.5)
    assert re.search(r"digit classifier: [\d.]+% correct", second)
    assert (tmp_path / "grids" / "checkpoint.png").is_file()
    chosen = run_tool("quality.py", *args, "--best-of", "1", "3", "--keep", "training", "equal", "all")
    names = [line[:44].strip() for line in chosen.splitlines() if line.startswith("checkpoint")]
    assert names == ["checkpoint.pt", "checkpoint.pt best of 3", "checkpoint.pt best of 3 (equal share)",
                     "checkpoint.pt best of 3 (all at once)"]  # a row for each K and each rule


def test_the_sweep_trains_each_run_as_gan_mnist_would():
    # Two seeds side by side, with the lazy penalty, against gan_mnist's own step for each.
    import gan_mnist
    import sweep

    generator, discriminator = sweep.stacked_networks([3, 4], torch.device("cpu"))
    g_optimizer = torch.optim.Adam(generator, gan_mnist.LR, betas=(0.0, 0.999), fused=True)
    d_optimizer = torch.optim.Adam(discriminator, gan_mnist.LR, betas=(0.0, 0.999), fused=True)
    references = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        networks = [gan_mnist.Generator(), gan_mnist.Discriminator()]
        references.append(networks + list(gan_mnist.make_optimizers(*networks, gan_mnist.LR, (0.0, 0.999))))
    for step in range(6):
        real = torch.rand(2, 16, 784) * 2 - 1
        penalty_gamma = gan_mnist.penalty_for_step(step, 1.0, 2)
        noise = []
        for run, reference in enumerate(references):
            torch.manual_seed(100 * run + step)  # train_step draws its z from here...
            noise.append(torch.randn(16, 100))
            torch.manual_seed(100 * run + step)
            gan_mnist.train_step(*reference, real[run], penalty_gamma)
        sweep.sweep_step(generator, discriminator, g_optimizer, d_optimizer, real, torch.stack(noise), penalty_gamma)
    for run, (reference_g, reference_d, _, _) in enumerate(references):
        torch.testing.assert_close(generator[2][run], reference_g.gen[2].weight.T, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(discriminator[0][run], reference_d.disc[0].weight.T, rtol=1e-4, atol=1e-6)
    # The two runs really trained apart.
    assert not torch.allclose(generator[2][0], generator[2][1], atol=1e-6)


def test_the_sweep_packs_images_side_by_side_and_penalises_r1_alone_when_asked():
    import sweep

    images = torch.arange(2 * 6 * 3.0).reshape(2, 6, 3)
    pairs = sweep.packed(images, 2)
    assert pairs.shape == (2, 3, 6) and torch.equal(pairs[1, 2], torch.cat([images[1, 4], images[1, 5]]))
    results = []
    for r2 in (True, False):
        generator, discriminator = sweep.stacked_networks([0], torch.device("cpu"), pack=2)
        assert discriminator[0].shape == (1, 2 * 784, 256)
        optimizers = [torch.optim.SGD(weights, lr=0.1) for weights in (generator, discriminator)]
        torch.manual_seed(0)
        sweep.sweep_step(generator, discriminator, *optimizers, torch.rand(1, 8, 784), torch.randn(1, 8, 100),
                         penalty_gamma=10.0, r2=r2, pack=2)
        results.append(discriminator[0].detach().clone())
    assert not torch.equal(*results)  # R2 is part of the penalty only when asked


def test_the_sweep_reports_every_setting(tiny_mnist, tmp_path):
    output = run_tool("sweep.py", "--settings", "gamma=0", "gamma=1 every=2 pack=2", "--seeds", "0",
                      "--max-steps", "2", "--samples", "50", "--device", "cpu", "--data-dir", tiny_mnist,
                      "--cache-dir", tmp_path, "--classifier-epochs", "1")
    assert "2 runs (2 settings x 1 seeds)" in output
    for setting in ("gamma=0", "gamma=1 every=2 pack=2"):
        assert re.search(rf"^{setting} +[\d.]+ \[ *[\d.]+ \.\. *[\d.]+\] +[\d.]+% +[\d.]+% +[\d.]+% +\d+ of 1 "
                         rf"+[\d.]+ ms$", output, re.MULTILINE), output


def test_the_sweep_refuses_an_unknown_setting():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--settings", "gamma=1 lr=3"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "key=value" in result.stderr
