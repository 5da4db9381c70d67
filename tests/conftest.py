"""Shared helpers: tiny MNIST-format data sets, running the script as a user would, and
comparing what runs leave behind."""
import contextlib
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

# As gan_mnist.main() does, but before torch is imported here: runs in this
# process then add up matrix products in the same order as the script's own.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "gan_mnist.py"
sys.path.insert(0, str(ROOT))

TINY_TRAIN_SIZE = 200  # with --batch-size 64: 4 steps per epoch, the last batch holds 8
TINY_TEST_SIZE = 70


def write_idx_images(path, images):
    """The IDX format MNIST ships in: magic 2051, count, rows, cols (big-endian), then pixels."""
    count, rows, cols = images.shape
    header = b"".join(n.to_bytes(4, "big") for n in (2051, count, rows, cols))
    path.write_bytes(header + images.to(torch.uint8).numpy().tobytes())


def write_idx_labels(path, labels):
    header = b"".join(n.to_bytes(4, "big") for n in (2049, len(labels)))
    path.write_bytes(header + labels.to(torch.uint8).numpy().tobytes())


def make_tiny_mnist(root, train_size=TINY_TRAIN_SIZE, test_size=TINY_TEST_SIZE, seed=0):
    """Random 28x28 'digits' in MNIST's exact file layout, so the real loading code runs.
    Every image holds both extremes, 0 and 255, so scaling can be checked at the ends."""
    generator = torch.Generator().manual_seed(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, size in (("train", train_size), ("t10k", test_size)):
        images = torch.randint(0, 256, (size, 28, 28), generator=generator)
        images[:, 0, 0], images[:, 27, 27] = 0, 255
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", torch.randint(0, 10, (size,), generator=generator))
    return Path(root)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory):
    return make_tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


def find_real_mnist():
    """Real MNIST for the slower tests: $GAN_MNIST_DATA, then data/, then a copy beside the repository."""
    candidates = [os.environ.get("GAN_MNIST_DATA"), ROOT / "data", ROOT.parent / "shared" / "mnist"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def real_mnist():
    found = find_real_mnist()
    if found is None:
        pytest.skip("real MNIST not found: set GAN_MNIST_DATA to a folder holding MNIST/raw/, "
                    "or place the files in ../shared/mnist or data/")
    return found


def run_script(*args, cwd=None, timeout=300, script=SCRIPT, env=None):
    """Run `python gan_mnist.py ARGS` in a subprocess and return the finished process.
    `env` adds to (or, with None as a value, removes from) the environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env = {name: value for name, value in env.items() if value is not None}
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


TINY_RUN_FLAGS = ["--batch-size", "64", "--sample-every", "3", "--device", "cpu"]


def tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)


@pytest.fixture
def drawn_on(monkeypatch):
    """The devices of every tensor handed to the drawing thread: it draws with NumPy, on the CPU."""
    import gan_mnist

    devices = set()
    submit = gan_mnist.BackgroundWriter.submit

    def recording_submit(self, function, *args, **options):
        devices.update(tensor.device.type for tensor in tensors_in(list(args)))
        return submit(self, function, *args, **options)

    monkeypatch.setattr(gan_mnist.BackgroundWriter, "submit", recording_submit)
    return devices


def stop_at_step(monkeypatch, stop_step):
    """Ctrl-C as a learner presses it, at the start of step `stop_step`."""
    import signal

    import gan_mnist

    penalty_for_step = gan_mnist.penalty_for_step

    def pressing_ctrl_c(step, gamma, every):
        if step == stop_step:
            signal.raise_signal(signal.SIGINT)
        return penalty_for_step(step, gamma, every)

    monkeypatch.setattr(gan_mnist, "penalty_for_step", pressing_ctrl_c)


def run_here(*args):
    """gan_mnist.main(ARGS) in this process, as a finished process: for refused inputs and for
    runs whose numbers are compared, where a new interpreter would only add start-up time."""
    import gan_mnist

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            gan_mnist.main([str(arg) for arg in args])
        code = 0
    except SystemExit as exited:
        code = exited.code
    finally:
        while gan_mnist.HELD_LOCKS:  # as the process's end would: free its output folder for later runs
            os.close(gan_mnist.HELD_LOCKS.pop())
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def load(out_dir):
    return torch.load(Path(out_dir) / "checkpoint.pt", weights_only=True)


def train(data, out_dir, *extra, env=None, own_process=False):
    """A tiny run; its checkpoint. In this process unless it needs its own (an environment,
    or a check across processes): a new interpreter adds seconds and nothing to compare."""
    args = ["--data-dir", data, "--out-dir", out_dir, *TINY_RUN_FLAGS, *extra]
    result = run_script(*args, env=env) if env or own_process else run_here(*args)
    assert result.returncode == 0, result.stderr
    return load(out_dir)


def assert_same_run(a, b):
    """Two checkpoints hold bit-identical loss histories and weights; if not, say where they part."""
    differs = (a["history"] != b["history"]).any(dim=1).nonzero().flatten()
    assert len(differs) == 0, f"the loss histories first differ at step {int(differs[0]) + 1} of {len(a['history'])}"
    for network in ("generator", "discriminator"):
        for name, weights in a[network].items():
            largest = (weights - b[network][name]).abs().max().item()
            assert largest == 0, f"{network} {name} differs by up to {largest:.3g}"


def snapshot(folder):
    return {path.relative_to(folder): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_one_line_error(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch run, whose files every refused input must leave untouched."""
    data = make_tiny_mnist(tmp_path_factory.mktemp("data"))
    out_dir = tmp_path_factory.mktemp("finished") / "outputs"
    train(data, out_dir, "--epochs", "1")
    return data, out_dir


def run_tool(name, *args):
    """python benchmarks/NAME ARGS; its output, once it has succeeded."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout
