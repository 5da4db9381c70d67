"""How much faster is gan_mnist.py than the article's own loop, and how close to the hardware?

    python benchmarks/speed.py [--device auto|cpu|cuda] [--steps 200] [--repeats 5] [--data-dir data]
                               [--whole-run-epochs 3] [--whole-run-repeats 3]

Times, in one process and interleaved (A, B, A, B, ...) after a warm-up:
  A  the article's loop as written (benchmarks/article_loop.py): a DataLoader
     over ToTensor() images, batch 128, Sigmoid + BCELoss, Adam lr 2e-4;
  B  gan_mnist.py's own data path and train_step, as the script runs them
     (also without the gradient penalty, to show what it costs, and on a GPU
     without its CUDA graph, to show what the graph adds).
Each repetition runs --steps optimiser steps of each, data loading included.
It also times the floor: the matrix multiplications of B's step alone, at
the same shapes, and says how close B comes to it; and B's fixed cost: its
step on a batch of one image, the part of a step that is not matrix work.
Peak memory is the peak RSS of a separate process running each loop on the
CPU, or torch.cuda.max_memory_allocated on a GPU.

Last, the whole run: `python gan_mnist.py --epochs N` (N = --whole-run-epochs),
run in this process with every picture and file it writes, against the same
number of B's steps alone, --whole-run-repeats times, interleaved; the
difference is what drawing and writing cost.
"""
import argparse
import contextlib
import io
import itertools
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import article_loop  # noqa: E402
import gan_mnist  # noqa: E402

BATCH_SIZE = 128


def endless(dataloader):
    """Batches without end: each pass over the data is a new, reshuffled epoch."""
    while True:
        yield from dataloader


def article_runner(data_dir, device):
    """A: returns run(steps) -> images seen, for the article's loop."""
    dataloader = article_loop.article_dataloader(data_dir)
    G, D, G_optimizer, D_optimizer = article_loop.article_models(device)
    batches = endless(dataloader)

    def run(steps):
        seen = 0
        for _ in range(steps):
            images, _ = next(batches)
            article_loop.article_step(G, D, G_optimizer, D_optimizer, images, device)
            seen += len(images)
        return seen

    return run


def gan_mnist_runner(data_dir, device, use_cuda_graph, gp_gamma=gan_mnist.GP_GAMMA):
    """B: returns run(steps) -> images seen, for gan_mnist.py's data path and step
    (by default, as the script runs them: the gradient penalty every GP_EVERY
    steps, and with the CUDA graph on a GPU)."""
    images = gan_mnist.load_mnist(data_dir, train=True)[0].to(device)
    labels = torch.zeros(len(images), dtype=torch.long, device=device)  # indexed as the script's are
    generator = gan_mnist.Generator().to(device)
    discriminator = gan_mnist.Discriminator().to(device)
    g_optimizer, d_optimizer = gan_mnist.make_optimizers(generator, discriminator, gan_mnist.LR, gan_mnist.BETAS)
    take_step = gan_mnist.make_step_function(generator, discriminator, g_optimizer, d_optimizer, BATCH_SIZE,
                                             use_cuda_graph)
    batches = (real_images for epoch in itertools.count() for real_images, _ in
               gan_mnist.shuffled_batches(images, labels, BATCH_SIZE, gan_mnist.SEED, epoch))
    steps_taken = 0

    def run(steps):
        nonlocal steps_taken
        seen = 0
        for _ in range(steps):
            real_images = next(batches)
            take_step(real_images, gan_mnist.penalty_for_step(steps_taken, gp_gamma, gan_mnist.GP_EVERY))
            steps_taken += 1
            seen += len(real_images)
        return seen

    return run


def step_matmul_shapes(batch, z_dim=gan_mnist.Z_DIM, hidden=gan_mnist.HIDDEN_DIM, image=gan_mnist.IMAGE_DIM):
    """(m, k, n) of every matrix product in gan_mnist.train_step: forward, and the
    backward products autograd needs (weight gradients of the network being
    trained, input gradients only where they flow on)."""
    both = 2 * batch  # the discriminator step judges real and fake images in one pass
    return [
        (batch, z_dim, hidden), (batch, hidden, image),  # G forward
        (both, image, hidden), (both, hidden, 1),  # D forward on real + fake
        (1, both, hidden), (both, 1, hidden), (hidden, both, image),  # D backward: W2, h, W1
        (batch, image, hidden), (batch, hidden, 1),  # G step: D forward on fake
        (batch, 1, hidden), (batch, hidden, image),  # ...gradient back through frozen D to the image
        (image, batch, hidden), (batch, image, hidden), (hidden, batch, z_dim),  # G backward: W2, h, W1
    ]


def median_seconds_per_call(work, device, repeats, calls=200):
    """Seconds per call of work(), after 20 warm-up calls: the median of `repeats` timings."""
    for _ in range(20):
        work()
    timings = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            work()
        synchronize(device)
        timings.append((time.perf_counter() - start) / calls)
    return statistics.median(timings)


def time_floor(device, repeats):
    """Seconds per step for the step's matrix products alone."""
    operands = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device), torch.empty(m, n, device=device))
                for m, k, n in step_matmul_shapes(BATCH_SIZE)]

    def products():
        for a, b, out in operands:
            torch.mm(a, b, out=out)

    return median_seconds_per_call(products, device, repeats)


def time_fixed_cost(device, repeats):
    """Seconds per step of B's step on a batch of one image: what a step costs
    besides its matrix work (launching ~100 operations, two Adam updates), which
    no batch size shrinks."""
    torch.manual_seed(0)
    generator, discriminator = gan_mnist.Generator().to(device), gan_mnist.Discriminator().to(device)
    optimizers = gan_mnist.make_optimizers(generator, discriminator, gan_mnist.LR, gan_mnist.BETAS)
    take_step = gan_mnist.make_step_function(generator, discriminator, *optimizers, 1, device.type == "cuda")
    one_image = torch.rand(1, gan_mnist.IMAGE_DIM, device=device) * 2 - 1
    return median_seconds_per_call(lambda: take_step(one_image), device, repeats)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(run, steps, device):
    """(steps per second, images per second, peak GPU bytes or None) for one repetition."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    seen = run(steps)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return steps / seconds, seen / seconds, peak


def peak_rss_of_separate_process(which, args):
    """Peak RSS (bytes) of a fresh process that sets up loop `which` and runs it."""
    command = [sys.executable, __file__, "--data-dir", args.data_dir, "--device", "cpu",
               "--steps", str(args.steps), "--memory-probe", which]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def own_peak_rss():
    """This process's peak resident memory in bytes. Linux's ru_maxrss would do, but
    it carries the parent's peak across fork and exec; VmHWM starts afresh at exec."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def time_whole_run(data_dir, device, epochs):
    """One default run of `epochs` epochs, in this process: the moments (seconds
    from its first step) of each epoch's log line, and of its end."""
    first_step, epoch_lines = [], []
    begin, log_epoch = gan_mnist.RunRecord.begin, gan_mnist.log_epoch

    def begin_and_note(*args):  # the first step follows at once
        begin(*args)
        first_step.append(time.perf_counter())

    def log_and_note(*args):
        log_epoch(*args)
        epoch_lines.append(time.perf_counter() - first_step[0])

    gan_mnist.RunRecord.begin, gan_mnist.log_epoch = begin_and_note, log_and_note
    try:
        with tempfile.TemporaryDirectory() as out_dir:
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # its log would bury the report
                    gan_mnist.main(["--epochs", str(epochs), "--data-dir", data_dir, "--out-dir", out_dir,
                                    "--device", device.type])
            except SystemExit as exited:
                if exited.code != 0:
                    raise
            end = time.perf_counter() - first_step[0]
            while gan_mnist.HELD_LOCKS:
                gan_mnist.os.close(gan_mnist.HELD_LOCKS.pop())
    finally:
        gan_mnist.RunRecord.begin, gan_mnist.log_epoch = begin, log_epoch
    return epoch_lines, end


def report_whole_run(data_dir, device, epochs, repeats):
    """The `whole run:` line, and what it means for a default run: the first epoch
    (warm-up) and the end-of-run pictures happen once, the rest every epoch.
    Each whole run is paired with the bare steps timed right after it; on a
    shared machine the spread over those pairs says how far to trust the median."""
    steps_per_epoch = math.ceil(len(gan_mnist.load_mnist(data_dir)[0]) / BATCH_SIZE)
    steps_alone = gan_mnist_runner(data_dir, device, use_cuda_graph=device.type == "cuda")
    steps_alone(max(5, steps_per_epoch // 10))  # warm-up
    runs, epoch_of_steps = [], []
    for _ in range(repeats):  # interleaved, as above
        runs.append(time_whole_run(data_dir, device, epochs))
        epoch_of_steps.append(steps_per_epoch / time_steps(steps_alone, steps_per_epoch * epochs, device)[0])
    steps_seconds = statistics.median(epoch_of_steps)  # one epoch's steps, alone
    whole = statistics.median(end for _, end in runs)
    print(f"whole run: {epochs} epochs ({epochs * steps_per_epoch:,} steps) of `python gan_mnist.py` took "
          f"{whole:.1f} s from the first step, its steps alone {epochs * steps_seconds:.1f} s: "
          f"{whole / (epochs * steps_seconds):.2f}x the time of its steps; "
          f"drawing and writing: {100 * (1 - epochs * steps_seconds / whole):.1f}% of the run")
    if epochs < 2:
        return
    later = [(lines[-1] - lines[0]) / (epochs - 1) for lines, _ in runs]  # seconds per epoch after the first
    later_epochs = statistics.median(later)
    first_epoch = statistics.median(lines[0] for lines, _ in runs)
    end_of_run = statistics.median(end - lines[-1] for lines, end in runs)
    default = gan_mnist.EPOCHS
    total = first_epoch + (default - 1) * later_epochs + end_of_run
    overhead = total - default * steps_seconds
    pairs = [100 * (1 - steps / run) for run, steps in zip(later, epoch_of_steps)]
    print(f"  per epoch after the first: {later_epochs:.2f} s, its steps alone {steps_seconds:.2f} s "
          f"({100 * (1 - steps_seconds / later_epochs):.1f}% drawing and writing; "
          f"{spread(pairs, '%')} over the {repeats} pairs); once per run: "
          f"{first_epoch - steps_seconds + end_of_run:.1f} s (the first epoch's warm-up, the pictures at the end); "
          f"at these rates a {default}-epoch default run spends {100 * overhead / total:.1f}% of its time "
          f"drawing and writing")


def spread(values, unit="", digits=1):
    return f"{statistics.median(values):,.{digits}f}{unit} [{min(values):,.{digits}f} .. {max(values):,.{digits}f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time the article's GAN loop against gan_mnist.py's.")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per repetition of each loop")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (A, B) after the warm-up")
    parser.add_argument("--data-dir", default=gan_mnist.DATA_DIR, help="the MNIST folder, as for gan_mnist.py")
    parser.add_argument("--whole-run-epochs", type=int, default=3,
                        help="epochs of the whole-run measurement (0 skips it)")
    parser.add_argument("--whole-run-repeats", type=int, default=3,
                        help="whole runs, each paired with its steps alone")
    parser.add_argument("--memory-probe", choices=["A", "B", "B0"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gan_mnist.make_cpu_arithmetic_repeatable()  # as the script does; it holds for A too, at no measurable cost

    device = gan_mnist.pick_device(args.device)
    torch.manual_seed(0)
    on_gpu = device.type == "cuda"
    runners = {"A": lambda: article_runner(args.data_dir, device),
               "B": lambda: gan_mnist_runner(args.data_dir, device, use_cuda_graph=on_gpu)}
    if gan_mnist.GP_GAMMA > 0:  # what the gradient penalty costs: the step with GP_GAMMA = 0
        runners["B0"] = lambda: gan_mnist_runner(args.data_dir, device, use_cuda_graph=on_gpu, gp_gamma=0.0)
    if on_gpu:  # what the CUDA graph adds: the same step, its Python run every time
        runners["B-"] = lambda: gan_mnist_runner(args.data_dir, device, use_cuda_graph=False)
    if args.memory_probe:  # a child process: one loop, then its own peak RSS
        runners[args.memory_probe]()(args.steps)
        print(own_peak_rss())
        return

    runs = {name: make() for name, make in runners.items()}
    for run in runs.values():  # warm-up: first-call allocations, kernel choice, caches
        run(max(5, args.steps // 10))
    results = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            results[name].append(time_steps(run, args.steps, device))

    if device.type == "cuda":
        memory = {name: [peak for _, _, peak in results[name]] for name in runs}
        memory_label = "peak GPU memory (max_memory_allocated)"
    else:
        probes = min(args.repeats, 3)
        memory = {name: [peak_rss_of_separate_process(name, args) for _ in range(probes)] for name in runs}
        memory_label = "peak RSS of a process running only that loop"
    floor = time_floor(device, args.repeats)
    fixed_cost = time_fixed_cost(device, args.repeats)

    cpu = platform.processor() or platform.machine()
    print(f"device: {gan_mnist.describe_device(device)}; torch {torch.__version__}; {cpu}; "
          f"batch {BATCH_SIZE}, {args.steps} steps x {args.repeats} repetitions, interleaved")
    print(f"{'':<24} {'steps/s median [min .. max]':>32} {'images/s median':>16}  {memory_label}")
    labels = {"A": "A  article's loop", "B": "B  gan_mnist.py", "B0": "B  without the penalty",
              "B-": "B  without CUDA graph"}
    for name in runs:
        steps_per_second = [r[0] for r in results[name]]
        images_per_second = [r[1] for r in results[name]]
        megabytes = [m / 2**20 for m in memory[name]]
        print(f"{labels[name]:<24} {spread(steps_per_second):>32} {statistics.median(images_per_second):>16,.0f}  "
              f"{spread(megabytes, ' MB')}")
    ratios = [b[0] / a[0] for a, b in zip(results["A"], results["B"])]
    print(f"speed-up B/A: {spread(ratios, 'x')}")
    if "B0" in results:
        costs = [without[0] / b[0] for without, b in zip(results["B0"], results["B"])]
        print(f"the gradient penalty's cost (every {gan_mnist.GP_EVERY} steps): B's step takes "
              f"{spread(costs, 'x', digits=2)} the time of B's without it")
    if "B-" in results:
        graph_gains = [b[0] / eager[0] for eager, b in zip(results["B-"], results["B"])]
        print(f"the CUDA graph's share: B is {spread(graph_gains, 'x')} as fast as B without it")
    b_seconds = 1 / statistics.median(r[0] for r in results["B"])
    a_seconds = 1 / statistics.median(r[0] for r in results["A"])
    print(f"floor (B's matrix products alone): {floor * 1e3:.3f} ms/step; "
          f"B takes {b_seconds * 1e3:.3f} ms/step = {b_seconds / floor:.2f}x the floor")
    print(f"fixed cost (B's step on a batch of 1 image, almost no matrix work): {fixed_cost * 1e3:.3f} ms/step; "
          f"floor + fixed cost = {(floor + fixed_cost) * 1e3:.3f} ms = {(floor + fixed_cost) / floor:.2f}x the floor")
    print(f"ceiling: a step that did nothing but those products would be {a_seconds / floor:.1f}x A")
    if args.whole_run_epochs > 0:
        report_whole_run(args.data_dir, device, args.whole_run_epochs, args.whole_run_repeats)


if __name__ == "__main__":
    main()
