"""The coach: a line in the log when training goes wrong (D has won, or the samples have
collapsed), and another when it clears; never in a healthy run."""
import pytest
import torch

import gan_mnist
from conftest import TINY_RUN_FLAGS, run_here


def epoch_of(d_of_g_z, steps=10):
    """An epoch's per-step metrics, D(G(z)) as given, the rest ordinary."""
    return torch.tensor([[1.0, 1.0, 0.6, d_of_g_z]] * steps)


@pytest.fixture
def real_digits():
    torch.manual_seed(0)
    return torch.rand(200, 784) * 2 - 1


def test_the_coach_suggests_a_penalty_that_is_on_when_the_constant_turned_it_off(real_digits, monkeypatch):
    monkeypatch.setattr(gan_mnist, "GP_GAMMA", 0.0)  # a learner who set GP_GAMMA = 0 at the top of the file
    coach = gan_mnist.Coach(real_digits, gan_mnist.parse_args([]))
    assert "--gp-gamma 1)" in coach.try_this


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
    coach.watch_the_game(1, torch.cat([epoch_of(0.01), epoch_of(0.2, steps=1)]))
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


