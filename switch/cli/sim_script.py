"""The terminal simulators' commands: a script of one command per line (``#`` starts a
comment), checked before connecting, or commands typed at a prompt (`switch.cli.sim_terminals`).
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from simulators.terminal_link import TerminalError
from switch.card_io.connection import CardConnectionError

COMMANDS_MAX = 100_000  # interactive commands in one session, at most
Handler = Callable[[list[str]], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: tuple[str, ...]  # argument names; FEN arguments are whole fen
    handler: Handler


@dataclass(frozen=True, slots=True)
class Step:
    line_no: int
    command: Command
    args: list[str]


class ScriptError(click.ClickException):
    pass


def parse_line(text: str, line_no: int, commands: dict[str, Command], where: str) -> Step | None:
    try:
        words = shlex.split(text, comments=True)
    except ValueError as error:
        raise ScriptError(f"{where}:{line_no}: {error}") from None
    if not words:
        return None
    name, args = words[0], words[1:]
    command = commands.get(name)
    if command is None:
        known = ", ".join(sorted(commands))
        raise ScriptError(f"{where}:{line_no}: unknown command {name!r} (known: {known})")
    if len(args) != len(command.args):
        usage = " ".join([name, *command.args])
        raise ScriptError(
            f"{where}:{line_no}: {name} takes {len(command.args)} argument(s): {usage}"
        )
    for arg_name, value in zip(command.args, args, strict=True):
        if arg_name.endswith("FEN") and not (value.isdigit() and 0 < int(value) < 10**10):
            raise ScriptError(f"{where}:{line_no}: {arg_name} must be a whole number of fen > 0")
    return Step(line_no, command, args)


def parse_script(path: Path, commands: dict[str, Command]) -> list[Step]:
    steps = []
    for line_no, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        step = parse_line(text, line_no, commands, str(path))
        if step is not None:
            steps.append(step)
    return steps


ABOUT = {
    "sign_on": "sign on: working keys, batch, the centre's clock",
    "params": "download the offline limits and categories",
    "blacklist": "download the blacklist changes since the version held",
    "settle": "settle a HIS bill: personal share from the card's ED, self-pay in cash",
    "settle_ep": "settle a HIS bill: self-pay from the card's EP",
    "settle_cash": "settle a HIS bill: the personal share paid in cash",
    "settle_visit": "settle a HIS bill (as settle) with the visit's department and ICD-10 codes",
    "book": "the card's record book after the PIN: health data and recent visits",
    "emergency": "the emergency block of the card's health data, without the PIN",
    "purchase": "a purchase with no bill from the ED (offline if the centre is unreachable)",
    "purchase_ep": "a purchase with no bill from the EP",
    "offline": "an offline ED purchase through the PSAM at once",
    "offline_ep": "an offline EP purchase through the PSAM at once",
    "void": "void a settled bill",
    "settle_batch": "batch settlement; uploads every record when not balanced; signs on again",
    "records": "this batch's card debits",
    "insert": "read the card, verify the PIN",
    "balance": "the card's ED and EP, the centre's balances",
    "history": "the card's recent transactions at the centre",
    "load": "load the ED from the personal fund",
    "load_lost": "load the ED, the confirmation never sent (a torn load)",
    "ep_load": "load the EP from bank savings (the bank PIN under the PIK)",
    "ep_load_lost": "load the EP, the confirmation never sent",
    "recover": "resolve a torn load (GET TRANSACTION PROVE)",
}


def help_lines(commands: dict[str, Command]) -> list[str]:
    """`help`: every command with its arguments (FEN: whole fen) and what it does."""
    usages = {c.name: " ".join([c.name, *c.args]) for c in commands.values()}
    width = max(len(u) for u in usages.values())
    lines = [f"  {usages[n]:<{width}}  {ABOUT.get(n, '')}".rstrip() for n in usages]
    return ["commands (amounts FEN in whole fen):", *lines, f"  {'help':<{width}}  this list",
            f"  {'quit':<{width}}  leave"]


def prompted(commands: dict[str, Command], title: str) -> Iterator[Step]:
    click.echo(click.style(f"== {title} ==", bold=True))
    click.echo("commands: " + " · ".join(" ".join([c.name, *c.args]) for c in commands.values()))
    click.echo("help lists them with what they do, quit to leave")
    for count in range(1, COMMANDS_MAX + 1):
        try:
            text = click.prompt(click.style(f"{title}>", fg="cyan"), default="", show_default=False)
        except (click.Abort, EOFError):
            return
        if text.strip() in ("quit", "exit"):
            return
        if text.strip() in ("help", "?"):
            click.echo("\n".join(help_lines(commands)))
            continue
        try:
            step = parse_line(text, count, commands, "input")
        except ScriptError as error:
            click.echo(click.style(error.message, fg="red"))
            continue
        if step is not None:
            yield step


async def run_steps(steps: Iterator[Step] | list[Step], *, stop_on_error: bool) -> int:
    failures = 0
    for step in steps:
        try:
            lines = await step.command.handler(step.args)
        except (TerminalError, CardConnectionError) as error:
            failures += 1
            message = f"line {step.line_no}: {step.command.name}: {error}"
            click.echo(click.style(message, fg="red"), err=True)
            if stop_on_error:
                return failures
            continue
        for line in lines:
            click.echo(line)
    return failures
