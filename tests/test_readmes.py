"""The two READMEs (English and Chinese) and the script's banners stay in step with the code."""
import re

import pytest

import gan_mnist
from conftest import ROOT

READMES = ["README.md", "README.zh-CN.md"]
SOURCE = (ROOT / "gan_mnist.py").read_text(encoding="utf-8")
# The article's own headings for section 5, as it prints them.
ARTICLE_HEADINGS = ["5.1  导入库", "5.2  加载MNIST数据集", "5.3  定义生成器", "5.4  定义判别器",
                    "5.5  定义损失函数和优化器", "5.6  训练模型"]


def flags_in_help(capsys):
    with pytest.raises(SystemExit):
        gan_mnist.parse_args(["--help"])
    return sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", capsys.readouterr().out)) - {"--help"})


def constants_at_the_top():
    """The names assigned under the constants banner, up to the first function."""
    top = SOURCE.split("Constants:", 1)[1].split("\ndef ", 1)[0]
    return re.findall(r"^([A-Z][A-Z0-9_]+) = ", top, flags=re.MULTILINE)


@pytest.mark.parametrize("readme", READMES)
def test_each_readme_lists_every_flag_and_constant(readme, capsys):
    text = (ROOT / readme).read_text(encoding="utf-8")
    flags, constants = flags_in_help(capsys), constants_at_the_top()
    assert len(flags) >= 15 and "--article-pixels" in flags and "--no-article-pixels" in flags
    assert len(constants) >= 12 and "ARTICLE_PIXELS" in constants
    missing = [flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", text)]
    missing += [name for name in constants if f"`{name}`" not in text]
    assert not missing, f"{readme} does not mention {missing}"


def test_the_readmes_link_to_each_other():
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    chinese = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
    assert "(README.zh-CN.md)" in "\n".join(english.splitlines()[:5])
    assert "(README.md)" in "\n".join(chinese.splitlines()[:5])


def test_the_banners_carry_the_articles_headings_in_its_order():
    banners = [line[2:] for line in SOURCE.splitlines() if re.match(r"# 5\.\d ", line)]
    assert [banner.split(" · ")[0] for banner in banners] == ARTICLE_HEADINGS
    for banner in banners:  # and the English beside each
        assert re.search(r" · [A-Z][a-z]", banner), banner


def test_the_readmes_article_map_points_at_the_right_lines():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    source = SOURCE.splitlines()
    links = re.findall(r"`([A-Za-z_]+)` \[L(\d+)\]\(gan_mnist\.py#L\2\)", readme)
    assert len(links) >= 10
    for name, number in links:
        assert name in source[int(number) - 1], f"README says {name} is on line {number}"
