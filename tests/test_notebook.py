"""The same file in a notebook: its cells run in order in one namespace, the
kernel's own arguments are ignored, and inside a kernel the pictures are shown
under the cell. No IPython is needed: a stand-in plays the kernel."""
import contextlib
import io
import re
import sys
import types

import pytest
import torch

import gan_mnist
from conftest import SCRIPT, run_here, stop_at_step

KERNEL_ARGV = ["/usr/lib/python3/site-packages/ipykernel_launcher.py", "-f", "/tmp/kernel-1234.json"]


def cells():
    """The file split on its `# %%` markers, as Jupyter (jupytext), VS Code and PyCharm split it."""
    parts = re.split(r"^# %%.*$", SCRIPT.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return parts[1:] if not parts[0].strip() else parts  # a marker on line 1 starts the first cell


class StandInDisplay(types.ModuleType):
    """IPython.display as a kernel has it, recording what is shown: ("display", name) and ("update", name)."""

    def __init__(self):
        super().__init__("IPython.display")
        self.shown = []
        display_module = self

        class Image:
            def __init__(self, filename):
                self.name = filename.rsplit("/", 1)[-1]

        class Handle:
            def update(self, image):
                display_module.shown.append(("update", image.name))

        self.Image = Image
        self._handle_class = Handle

    def display(self, image, display_id=False):
        self.shown.append(("display", image.name))
        return self._handle_class() if display_id else None


@pytest.fixture
def kernel(monkeypatch):
    """A Jupyter kernel, as far as the script can tell: IPython imported, its shell an IPKernelApp's."""
    shell = types.SimpleNamespace(config={"IPKernelApp": {"connection_file": KERNEL_ARGV[2]}})
    monkeypatch.setattr(sys, "argv", KERNEL_ARGV)
    return stand_in_ipython(monkeypatch, shell)


def stand_in_ipython(monkeypatch, shell):
    """IPython, imported, whose get_ipython() returns `shell` (None: no shell running); its display module."""
    display = StandInDisplay()
    ipython = types.ModuleType("IPython")
    ipython.version_info = (8, 30, 0)  # matplotlib asks
    ipython.get_ipython = lambda: shell
    ipython.display = display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return display


def test_the_cells_are_the_articles_sections_and_the_last_one_trains():
    # the first cell is the docstring and 5.1 (a docstring alone would be shown as the cell's value);
    # its marker is on line 1, as VS Code's "Run Cell" runs only what stands below a marker
    assert SCRIPT.read_text(encoding="utf-8").startswith("# %%\n")
    first, *middle, last = cells()
    titles = [first.split('"""\n', 1)[1].splitlines()[0][2:]] + [cell.strip().splitlines()[0][2:] for cell in middle]
    assert [title.split(" · ")[0] for title in titles[:8]] == [
        "5.1 导入库", "常量", "5.2 加载MNIST数据集", "5.3 定义生成器", "5.4 定义判别器",
        "5.5 定义损失函数和优化器", "5.6 训练模型", "文章之外：判别器的梯度惩罚"]
    assert last.strip() == 'if __name__ == "__main__":\n    main()'


def test_run_cell_by_cell_with_edited_constants_it_trains_and_shows_the_grid(kernel, tiny_mnist, tmp_path):
    namespace = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        for number, cell in enumerate(cells()):
            if "Constants:" in cell:  # the constants cell, as a learner edits it
                edits = {"EPOCHS = 200 ": "EPOCHS = 3 ", "BATCH_SIZE = 128 ": "BATCH_SIZE = 64 ",
                         'DEVICE = "auto"': 'DEVICE = "cpu"', 'DATA_DIR = "data"': f"DATA_DIR = {str(tiny_mnist)!r}",
                         'OUT_DIR = "outputs"': f"OUT_DIR = {str(tmp_path)!r}"}
                for old, new in edits.items():
                    assert old in cell, old
                    cell = cell.replace(old, new)
            exec(compile(cell, f"cell {number}", "exec"), namespace)  # the last cell calls main(): no SystemExit
    log = out.getvalue()
    assert "error" not in log and "Done: 12 steps" in log, log  # 3 epochs of 4 steps: the edited constants
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and checkpoint["config"]["batch_size"] == 64
    # the grid shown once, before the first step, then redrawn in place after each epoch
    grids = [entry for entry in kernel.shown if entry[1].startswith("epoch_")]
    assert grids == [("display", "epoch_000.png"), ("update", "epoch_001.png"), ("update", "epoch_002.png"),
                     ("update", "epoch_003.png")]
    after = [name for how, name in kernel.shown if not name.startswith("epoch_")]
    assert after == ["losses.png", "real_vs_fake.png", "latent_walk.png", "d_picks.png", "d_scores.png",
                     "nearest_training.png"]


def test_main_in_a_kernel_returns_its_code_and_can_be_called_again(kernel, tiny_mnist, tmp_path):
    common = ["--data-dir", tiny_mnist, "--out-dir", tmp_path, "--batch-size", "64", "--device", "cpu"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert gan_mnist.main([*common, "--epochs", "1"]) == 0
        assert gan_mnist.main([*common, "--epochs", "2", "--resume"]) == 0  # the same folder, the same process
        assert gan_mnist.main([*common, "--epochs", "2"]) == 2  # a refused input: its code, not a traceback
        assert gan_mnist.main(["--generate", "4", "--out-dir", tmp_path, "--device", "cpu"]) == 0
    assert "already holds a run" in err.getvalue()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert ("display", "generated.png") in kernel.shown


def test_the_kernels_own_arguments_are_not_taken_for_the_learners(kernel, monkeypatch):
    seen = []
    monkeypatch.setattr(gan_mnist, "train", lambda args: seen.append(args) or 0)
    with contextlib.redirect_stdout(io.StringIO()):
        assert gan_mnist.main() == 0  # sys.argv is the kernel's: -f kernel.json
    assert seen[0].command_line == [] and seen[0].epochs == gan_mnist.EPOCHS
    monkeypatch.setattr(sys, "argv", ["gan_mnist.py", "--epochs", "5"])  # what %run gan_mnist.py --epochs 5 sets
    with contextlib.redirect_stdout(io.StringIO()):
        assert gan_mnist.main() == 0
    assert seen[1].epochs == 5
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/site-packages/ipykernel/__main__.py", "-f", "k.json"])
    with contextlib.redirect_stdout(io.StringIO()):
        assert gan_mnist.main() == 0  # `python -m ipykernel -f k.json`: the kernel's own, too
    assert seen[2].command_line == []


def test_a_stop_in_a_kernel_says_which_main_call_continues(kernel, tiny_mnist, tmp_path, monkeypatch):
    stop_at_step(monkeypatch, 5)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert gan_mnist.main(["--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "3"]) == 130
    command = out.getvalue().strip().splitlines()[-1].split("Continue with:  ")[1]
    assert command == repr(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path), "--epochs", "3",
                            "--resume"]).join(["main(", ")"])


def test_outside_a_kernel_nothing_is_displayed(tiny_mnist, tmp_path, monkeypatch):
    # IPython installed and imported, but no kernel running (a terminal): as today, files only
    display = stand_in_ipython(monkeypatch, None)
    result = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "1", "--batch-size", "64",
                      "--device", "cpu")
    assert result.returncode == 0 and display.shown == []
    assert gan_mnist.notebook_display() is None
