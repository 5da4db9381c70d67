"""How varied is the fixed-noise grid, step by step, in healthy runs? The
measurement behind the coach's collapse rule (gan_mnist.Coach).

    python benchmarks/coach_variety.py --data-dir ../mnist-folder      # the table in benchmarks/README.md
    python benchmarks/coach_variety.py --batch-sizes 32 1024 --steps 600

Each run trains gan_mnist's GAN as `python gan_mnist.py --batch-size B` would
(the default settings otherwise, or the article's betas), and every --every
steps measures the coach's variety: the mean pixel distance between pairs of
the 64 fixed-noise digits, over the same for 1,000 real test digits. It prints,
per run, the variety at the first epochs' ends, the last step at which it was
under Coach.COLLAPSED, what the coach's own checks (every Coach.CHECK_EVERY
steps from Coach.WARM_UP_STEPS on) saw and would say, and the lowest of each
epoch's highest D(G(z)) (the coach says "D has won" under Coach.D_HAS_WON).
A generator that ignores its noise, the collapse the tests force, scores 0.00
from its first step.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gan_mnist  # noqa: E402


def variety_by_step(images, test_images, batch_size, betas, steps, every, seed=0):
    torch.manual_seed(seed)
    generator, discriminator = gan_mnist.Generator(), gan_mnist.Discriminator()
    g_optimizer, d_optimizer = gan_mnist.make_optimizers(generator, discriminator, gan_mnist.LR, betas)
    fixed_noise = torch.randn(gan_mnist.GRID_SIZE, gan_mnist.Z_DIM)
    real_variety = torch.pdist(test_images).mean().item()
    labels = torch.zeros(len(images), dtype=torch.long)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    record, step, epoch, fakes_judged_real = [], 0, 0, []
    while step < steps:
        for real_images, _ in gan_mnist.shuffled_batches(images, labels, batch_size, seed, epoch):
            metrics = gan_mnist.train_step(generator, discriminator, g_optimizer, d_optimizer, real_images,
                                           gan_mnist.penalty_for_step(step, gan_mnist.GP_GAMMA, gan_mnist.GP_EVERY))
            fakes_judged_real.append(metrics[3].item())
            step += 1
            if step % every == 0 or step % steps_per_epoch == 0:
                variety = torch.pdist(gan_mnist.samples_from(generator, fixed_noise)).mean().item() / real_variety
                record.append((step, variety))
            if step >= steps:
                break
        epoch += 1
    # the coach's "D has won" measure: the highest D(G(z)) of each epoch's steps
    highest_d_of_g_z = [max(fakes_judged_real[start:start + steps_per_epoch])
                        for start in range(0, len(fakes_judged_real), steps_per_epoch)]
    return record, steps_per_epoch, highest_d_of_g_z


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=gan_mnist.DATA_DIR)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    parser.add_argument("--steps", type=int, default=1200, help="steps per run, or 3 epochs if that is more")
    parser.add_argument("--every", type=int, default=10, help="steps between measurements")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="append each run's measurements to this file, one JSON line a run")
    args = parser.parse_args()
    gan_mnist.make_cpu_arithmetic_repeatable()
    images, _ = gan_mnist.load_mnist(args.data_dir)
    test_images = gan_mnist.load_mnist(args.data_dir, train=False)[0][:gan_mnist.EVALUATION_SIZE]
    runs = [(f"batch {size}", size, gan_mnist.BETAS) for size in args.batch_sizes]
    runs.append(("article's betas, batch 128", 128, (0.9, 0.999)))
    limit = gan_mnist.Coach.COLLAPSED
    print(f"variety of the 64 grid digits (real digits = 1.00; the coach's limit {limit}), seed {args.seed}")
    for name, batch_size, betas in runs:
        start = time.perf_counter()
        steps = max(args.steps, 3 * math.ceil(len(images) / batch_size))
        record, steps_per_epoch, highest_d_of_g_z = variety_by_step(images, test_images, batch_size, betas, steps,
                                                                    args.every, args.seed)
        at_epochs = [f"{variety:.2f}" for step, variety in record if step % steps_per_epoch == 0]
        low = [step for step, variety in record if variety < limit]
        coach = gan_mnist.Coach
        judged = [(step, variety) for step, variety in record
                  if step >= coach.WARM_UP_STEPS and step % coach.CHECK_EVERY == 0]
        warned = [step for step, variety in judged if variety < limit]
        print(f"{name:<27} epoch ends {' '.join(at_epochs[:3]):<15} last under {limit} at step "
              f"{low[-1] if low else '-':<5} coach's checks: lowest {min(v for _, v in judged):.2f}, "
              f"{'warns at step ' + str(warned[0]) if warned else 'no warning':<19} "
              f"D(G(z)) epoch highs >= {min(highest_d_of_g_z):.2f}  [{time.perf_counter() - start:.0f} s]", flush=True)
        if args.save:
            with open(args.save, "a") as file:
                file.write(json.dumps({"run": name, "seed": args.seed, "steps_per_epoch": steps_per_epoch,
                                       "variety": record, "highest_d_of_g_z": highest_d_of_g_z}) + "\n")


if __name__ == "__main__":
    main()
