"""The `medswitch` command line: one entry point, one sub-command group per concern."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medswitch")
def main() -> None:
    """medswitch — transaction switch for a medical-insurance IC-card network."""


# Sub-command groups. Each lives in its own module; add one line here per group.
from switch.cli.keys import keys  # noqa: E402

main.add_command(keys)
from switch.cli.messages import messages  # noqa: E402

main.add_command(messages)

from switch.cli.hsm import hsm_group  # noqa: E402

main.add_command(hsm_group)
from switch.cli.serve import routes, run, serve  # noqa: E402

main.add_command(serve)
main.add_command(run)
main.add_command(routes)
from switch.cli.ledger import demo_group, ledger_group  # noqa: E402

main.add_command(ledger_group)
main.add_command(demo_group)
from switch.cli.sandbox import cards_command, sandbox_command  # noqa: E402

demo_group.add_command(sandbox_command)
demo_group.add_command(cards_command)
from switch.cli.medical import authorise, catalogue, his_group, import_group, policy  # noqa: E402

main.add_command(catalogue)
main.add_command(policy)
main.add_command(authorise)
main.add_command(import_group)
main.add_command(his_group)
from switch.cli.sim import sim_group  # noqa: E402

main.add_command(sim_group)
from switch.cli.cards import cards, psams  # noqa: E402

main.add_command(cards)
main.add_command(psams)
from switch.cli.bank import bank_group, bank_sim  # noqa: E402

sim_group.add_command(bank_sim)
main.add_command(bank_group)
from switch.cli.ledger_files import ledger_files  # noqa: E402  (also adds import contributions|cardholders)

main.add_command(ledger_files)
from switch.cli.review import review_group  # noqa: E402
from switch.cli.terminals import sim_kiosk, sim_pos  # noqa: E402, F401

main.add_command(review_group)
from switch.cli.dayend import dayend_group  # noqa: E402

main.add_command(dayend_group)
from switch.cli.recon import bank_files_sim  # noqa: E402

sim_group.add_command(bank_files_sim)
from switch.cli.statements import statements_group  # noqa: E402

main.add_command(statements_group)
from switch.cli.recon import import_returns_command, import_statement_command  # noqa: E402

dayend_group.add_command(import_returns_command)
dayend_group.add_command(import_statement_command)
