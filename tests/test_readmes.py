"""The two READMEs (English and Chinese) and the script's banners stay in step with the code."""
import re

import pytest

import gan_mnist
from conftest import ROOT

READMES = ["README.md", "README.zh-CN.md"]
SOURCE = (ROOT / "gan_mnist.py").read_text(encoding="utf-8")
# The article's own headings for section 5, as it prints them.
ARTICLE_HEADINGS = ["5.1 导入库", "5.2 加载MNIST数据集", "5.3 定义生成器", "5.4 定义判别器",
                    "5.5 定义损失函数和优化器", "5.6 训练模型"]


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


@pytest.mark.parametrize("readme", READMES)
def test_the_readmes_article_map_points_at_the_right_lines(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    source = SOURCE.splitlines()
    links = re.findall(r"`([A-Za-z_]+)` \[L(\d+)\]\(gan_mnist\.py#L\2\)", text)
    assert len(links) >= 10
    for name, number in links:
        assert name in source[int(number) - 1], f"{readme} says {name} is on line {number}"


def sections(text):
    """(heading, body) for each ## section of a README."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2]))


def facts(body):
    """What a translation must keep: flags, code names, files, links, and every figure with a decimal point."""
    tokens = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", body))
    tokens |= set(re.findall(r"`([A-Za-z_][A-Za-z0-9_.]*)`", body))
    tokens |= set(re.findall(r"[\w/.-]+\.(?:png|gif|csv|pt|py|md)\b", body))
    tokens |= set(re.findall(r"\]\(([^)\s]+)\)", body))
    tokens |= set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", body))
    return tokens


def test_the_two_readmes_are_one_document_section_for_section():
    english = sections((ROOT / "README.md").read_text(encoding="utf-8"))
    chinese = sections((ROOT / "README.zh-CN.md").read_text(encoding="utf-8"))
    assert len(english) == len(chinese) >= 10, ([h for h, _ in english], [h for h, _ in chinese])
    for (english_heading, english_body), (chinese_heading, chinese_body) in zip(english, chinese):
        only_english, only_chinese = facts(english_body) - facts(chinese_body), facts(chinese_body) - facts(english_body)
        assert not only_english and not only_chinese, (
            f"'{english_heading}' / '{chinese_heading}': only in English {sorted(only_english)}, "
            f"only in Chinese {sorted(only_chinese)}")


def messages_the_script_prints():
    """The fixed opening words of every one-line error and warning in gan_mnist.py."""
    openings = []
    literals = re.findall(r'(?:RunError\(|super\(\).__init__\()f?"([^"]+)"', SOURCE)  # the errors
    literals += re.findall(r'say\(f"(warning: cannot [^"]+)"', SOURCE)  # a picture not written
    literals += re.findall(r'(?:say|return) ?\(f"((?:No MNIST in|note:|memory ran out)[^"]+)"', SOURCE)  # notes
    literals += re.findall(r'f"(the (?:samples|discriminator|generator) [^"]+)"', SOURCE)  # the coach
    for literal in literals:
        fixed = [part.strip() for part in re.split(r"\{[^}]*\}", literal)]
        first = next(part for part in fixed if len(part.split()) >= 2)
        if not first.startswith("("):  # "(see: python gan_mnist.py --help)" follows argparse's own words
            openings.append(" ".join(first.split()[:4]))
    return sorted(set(openings))


@pytest.mark.parametrize("readme", READMES)
def test_each_readme_lists_every_error_and_warning(readme):
    text = re.sub(r"\s+", " ", (ROOT / readme).read_text(encoding="utf-8"))
    openings = messages_the_script_prints()
    assert len(openings) >= 25  # the messages found at all: the extraction still works
    missing = [opening for opening in openings if opening not in text]
    assert not missing, f"{readme} does not list {missing}"


ARTICLE = ROOT.parent / "shared" / "article" / "000_2ced8b2d75a1dac5.txt"
# The comments in the article's code (section 5), as it prints them.
ARTICLE_COMMENTS = ["下载MNIST数据集", "构建数据加载器", "输出像素值在(-1,1)", "输出为真实图像的概率", "损失函数",
                    "生成器", "判别器", "优化器", "每1000批次保存一次生成图像", "将图像展平为向量", "生成噪声数据",
                    "生成器生成假图像", "训练判别器", "最大化判别器能够正确识别真实图像和生成图像的概率", "判别真实图像"]


def test_the_articles_headings_and_comments_stand_in_the_code():
    if ARTICLE.is_file():  # the lists above are the article's own
        article = ARTICLE.read_text(encoding="utf-8")
        assert re.findall(r"^### (5\.\d .+)$", article, flags=re.MULTILINE) == ARTICLE_HEADINGS
        code = "\n".join(re.findall(r"```python\n(.*?)(?:```|\Z)", article.split("### 5.1")[1], flags=re.DOTALL))
        comments = [comment.strip("= ") for comment in re.findall(r"#\s*(.+?)\s*$", code, flags=re.MULTILINE)]
        assert sorted(set(comments)) == sorted(ARTICLE_COMMENTS)
    code_comments = " ".join(re.findall(r"#.*$", SOURCE, flags=re.MULTILINE)) + SOURCE
    missing = [comment for comment in ARTICLE_COMMENTS if comment not in code_comments]
    assert not missing, f"gan_mnist.py lacks the article's comments {missing}"
    for heading in ARTICLE_HEADINGS:
        assert f"# {heading} · " in SOURCE, heading


def anchors(markdown):
    """GitHub's anchors for a Markdown file's headings: lower case, spaces to hyphens, punctuation dropped."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)}


@pytest.mark.parametrize("document", READMES + ["docs/results.md", "benchmarks/README.md", "data/README.md"])
def test_every_local_link_and_anchor_resolves(document):
    path = ROOT / document
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"\b[A-Z]+(?:_[A-Z]+)*_(?:LESSON|DEFAULT|SECTION)\b", text), "a placeholder is left"
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"https?://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{document} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text(encoding="utf-8")), f"{document}: no heading for #{anchor}"
