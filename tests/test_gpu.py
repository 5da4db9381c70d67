"""The GPU and Apple paths, end to end through main(): what `DEVICE = "auto"` picks
for everyone who has one. Each test skips, saying why, on a machine without that
device; where it has one, run `python -m pytest -q tests/test_gpu.py` there."""
import pytest
import torch

import gan_mnist
from conftest import TINY_TRAIN_SIZE, load, run_here, stop_at_step

ACCELERATORS = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA GPU here: these tests guard the next run on one")),
    pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(),
                                                 reason="no Apple MPS here: these tests guard the next run on one")),
]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA graph runs only on a CUDA GPU")
# 4 steps an epoch (the last batch holds 8), the penalty every 3rd step: over 4 epochs the
# CUDA graph records both of its graphs (with and without the penalty) and replays them.
FLAGS = ["--batch-size", "64", "--sample-every", "3", "--gp-gamma", "1", "--gp-every", "3"]
assert TINY_TRAIN_SIZE == 200


@pytest.mark.parametrize("device", ACCELERATORS)
def test_train_stop_resume_and_generate_on_the_device(device, tiny_mnist, tmp_path, monkeypatch, drawn_on):
    out_dir, common = tmp_path / "out", ["--data-dir", tiny_mnist, "--device", device, *FLAGS]
    result = run_here(*common, "--out-dir", out_dir, "--epochs", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Training on {device}")
    straight = load(out_dir)
    assert straight["step"] == 16 and (out_dir / "d_scores.png").is_file()

    with monkeypatch.context() as patch:
        stop_at_step(patch, 6)
        stopped = run_here(*common, "--out-dir", tmp_path / "stopped", "--epochs", "4")
    assert stopped.returncode == 130 and "--resume" in stopped.stdout, stopped.stderr
    assert load(tmp_path / "stopped")["step"] == 7  # the step under way when Ctrl-C came is finished
    resumed = run_here(*common, "--out-dir", tmp_path / "stopped", "--epochs", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert load(tmp_path / "stopped")["step"] == 16 and (tmp_path / "stopped" / "d_scores.png").is_file()
    if device == "cuda":  # a GPU run repeats closely, not bit for bit
        torch.testing.assert_close(load(tmp_path / "stopped")["history"], straight["history"], rtol=1e-3, atol=1e-3)

    generated = run_here("--generate", "16", "--best-of", "3", "--out-dir", out_dir, "--data-dir", tiny_mnist,
                         "--device", device)
    assert generated.returncode == 0, generated.stderr
    for name in ["generated.png", "latent_walk.png", "d_scores.png", "nearest_training.png"]:
        assert (out_dir / name).is_file(), name
    assert drawn_on == {"cpu"}  # nothing the drawing thread gets is left on the GPU


@pytest.mark.parametrize("device", ACCELERATORS)
def test_a_conditional_run_draws_the_digit_asked_for_on_the_device(device, tiny_mnist, tmp_path, drawn_on):
    common = ["--data-dir", tiny_mnist, "--device", device, "--out-dir", tmp_path]
    trained = run_here(*common, "--epochs", "2", "--conditional", *FLAGS)
    assert trained.returncode == 0, trained.stderr
    generated = run_here(*common, "--generate", "8", "--digit", "3", "--best-of", "2")
    assert generated.returncode == 0, generated.stderr
    assert "8 of digit 3, D's best of 2" in generated.stdout and (tmp_path / "generated.png").is_file()
    assert drawn_on == {"cpu"}


@needs_cuda
def test_no_cuda_graph_takes_the_same_steps_as_the_graph(tiny_mnist, tmp_path):
    common = ["--data-dir", tiny_mnist, "--device", "cuda", "--epochs", "4", *FLAGS]
    assert run_here(*common, "--out-dir", tmp_path / "graph").returncode == 0
    as_written = run_here(*common, "--out-dir", tmp_path / "plain", "--no-cuda-graph")
    assert as_written.returncode == 0, as_written.stderr
    graph, plain = load(tmp_path / "graph"), load(tmp_path / "plain")
    torch.testing.assert_close(graph["history"], plain["history"], rtol=1e-3, atol=1e-4)


@needs_cuda
def test_a_seeded_gpu_run_repeats_closely(tiny_mnist, tmp_path):
    common = ["--data-dir", tiny_mnist, "--device", "cuda", "--epochs", "2", *FLAGS]
    for name in ("a", "b"):
        assert run_here(*common, "--out-dir", tmp_path / name).returncode == 0
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    torch.testing.assert_close(a["history"], b["history"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["generator"], b["generator"], rtol=1e-4, atol=1e-5)


@needs_cuda
def test_the_cuda_graph_takes_the_same_steps_as_train_step_with_and_without_the_penalty():
    device = torch.device("cuda")
    shuffle = torch.Generator().manual_seed(1)
    sizes = [128] * 8 + [40] + [128] * 7  # recorded at the 4th step; a smaller last batch runs as written
    batches = [(torch.rand(size, 784, generator=shuffle) * 2 - 1).to(device) for size in sizes]
    runs = []
    for use_cuda_graph in (False, True):
        torch.manual_seed(0)  # the same weights and the same noise z for both
        generator, discriminator = gan_mnist.Generator().to(device), gan_mnist.Discriminator().to(device)
        optimizers = gan_mnist.make_optimizers(generator, discriminator, 2e-4, (0.5, 0.999))
        take_step = gan_mnist.make_step_function(generator, discriminator, *optimizers, 128, use_cuda_graph)
        # The penalty every 4th step: a second graph, recorded at its second use.
        metrics = torch.stack([take_step(batch, gan_mnist.penalty_for_step(step, 1.0, 4))
                               for step, batch in enumerate(batches)])
        runs.append([metrics, *generator.parameters(), *discriminator.parameters()])
    assert isinstance(take_step, gan_mnist.CudaGraphStep) and sorted(take_step.graphs) == [0.0, 4.0]
    for as_written, replayed in zip(*runs):
        torch.testing.assert_close(replayed, as_written, rtol=1e-4, atol=1e-5)


