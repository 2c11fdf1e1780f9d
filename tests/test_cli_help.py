"""Every subcommand's --help: each option has help, placeholders survive rich markup, brackets balance,
defaults are shown once, flags show no type; and the README's subcommand table lists exactly the CLI's."""

import re
from pathlib import Path

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from dftrain.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _is_group(command) -> bool:
    return hasattr(command, "commands")  # Typer's groups (its own click copy in recent versions)


def _walk(command, path: tuple[str, ...] = ()):
    yield path, command
    if _is_group(command):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app)))
LEAVES = [path for path, command in COMMANDS if not _is_group(command)]


def _ids(value):
    return " ".join(value) or "dftrain"


def _render(path: tuple[str, ...]) -> str:
    # wide enough that no option's help wraps: one option per line
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "3000", "TERMINAL_WIDTH": "3000"})
    assert result.exit_code == 0, result.output
    return result.output


def _help_texts(command):
    yield "the command's description", command.help or ""
    for param in command.params:
        if not getattr(param, "hidden", False):
            yield param.opts[0] if param.opts else param.name, getattr(param, "help", None) or ""


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[_ids(p) for p, _ in COMMANDS])
def test_every_option_has_help_that_rich_markup_keeps(path, command):
    for name, text in _help_texts(command):
        assert text.strip(), f"dftrain {' '.join(path)} {name}: no help"
        # `[word]` is rich markup: it would vanish from the page; `\[` is the escape
        assert Text.from_markup(text).plain == text.replace("\\[", "["), f"{name}: markup eats part of {text!r}"


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[_ids(p) for p, _ in COMMANDS])
def test_the_rendered_help_balances_brackets_shows_defaults_once_and_no_flag_types(path):
    page = _render(path)
    for opening, closing in ("()", "[]", "{}"):
        assert page.count(opening) == page.count(closing), f"unbalanced {opening}{closing} in:\n{page}"
    assert "<bool>" not in page
    # "(default X)" written in the help and Typer's "[default: X]" on one option
    said = re.compile(r"(?:[(\[;,]|\.)\s?default\b", re.I)  # not a value named 'default'
    twice = [" ".join(line.split()) for line in page.splitlines() if len(said.findall(line)) > 1]
    assert not twice, "default shown twice:\n" + "\n".join(twice)


def test_shard_builds_captions_placeholder_renders():
    assert "{key: caption, or a list of captions}" in _render(("shard", "build"))


def _readme_commands() -> set[str]:
    """'shard build', 'train', ... named in the README's subcommand table (`dftrain X` or `-m dftrain X`)."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| stage | command | reference |"):]
    table = table[: table.index("\n\n")]
    groups = {" ".join(p) for p, c in COMMANDS if p and _is_group(c)}
    named = set()
    for snippet in re.findall(r"`([^`]*)`", table):
        match = re.search(r"(?:^|\s)dftrain\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?", snippet)
        if match:
            first, second = match.groups()
            named.add(f"{first} {second}" if first in groups and second else first)
    return named


def test_the_readme_table_lists_exactly_the_cli_subcommands():
    cli = {" ".join(path) for path in LEAVES if path}
    assert _readme_commands() == cli
