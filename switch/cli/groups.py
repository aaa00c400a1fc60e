"""The groups whose commands live in several modules (`sim`, `import`, `dayend`): tables of
dotted names, as in `switch.cli.COMMANDS`, so that `medswitch sim --help` imports no simulator."""

from __future__ import annotations

import click

from switch.cli.lazy import Lazy, LazyGroup

SIM = {
    "bank": Lazy(
        "switch.cli.bank:bank_sim",
        "A bank host: counters (acquirer) and savings accounts (issuer).",
    ),
    "bank-files": Lazy(
        "switch.cli.recon:bank_files_sim",
        "The bank's day-end files: return files 回盘 for payout files, daily statements.",
    ),
    "his": Lazy(
        "switch.cli.sim:sim_his",
        "Build realistic bills from the catalogue and submit them to the HIS API.",
    ),
    "kiosk": Lazy(
        "switch.cli.sim_terminals:sim_kiosk",
        "A self-service kiosk: PIN, balances, ED load from the personal fund, EP load from "
        "bank savings, torn-load recovery.",
    ),
    "pos": Lazy(
        "switch.cli.sim_terminals:sim_pos",
        "A hospital/pharmacy POS with its PSAM: sign-on, bills, offline purchases, batch.",
    ),
}

IMPORT = {
    "cardholders": Lazy(
        "switch.cli.ledger_files:import_cardholders_command",
        "Register the cardholders of an encrypted cardholders FILE (new ones added, changed "
        "ones updated, never an ID number) and open their ledger accounts; checked whole first.",
    ),
    "contributions": Lazy(
        "switch.cli.ledger_files:import_contributions_command",
        "Post a contributions FILE: each line split by the policy's age ratios into the "
        "personal fund and the pooled fund.",
    ),
    "fee-records": Lazy(
        "switch.cli.medical:import_fee_records",
        "Import a hospital's fee-record FILE (MAC and totals checked, or nothing is stored).",
    ),
}

DAYEND = {
    "confirm-reissue": Lazy(
        "switch.cli.payouts:confirm_reissue_command",
        "Confirm that a returned PAYOUT_ID may be paid again to the same account: the next "
        "day-end re-issues it.",
    ),
    "approve": Lazy(
        "switch.cli.dayend:approve_command",
        "Approve DATE's prepared payouts (the checker, not the maker): post them and release "
        "the files to the outbox.",
    ),
    "import-returns": Lazy(
        "switch.cli.recon:import_returns_command",
        "Post a bank's return FILE for a released payout file: paid payments settle the fund "
        "bank account or the EP float, returned ones go back to the payable for the next "
        "payout and into review.",
    ),
    "import-statement": Lazy(
        "switch.cli.recon:import_statement_command",
        "Match and post a bank's daily statement FILE (contributions into the fund bank "
        "account, savings debits into the EP float, payouts out of them); unmatched lines go "
        "to review.",
    ),
    "reject": Lazy(
        "switch.cli.dayend:reject_command",
        "Reject DATE's prepared payouts: nothing posts or is released; run day-end again.",
    ),
    "run": Lazy(
        "switch.cli.dayend:run_command",
        "Clear business DATE and prepare its payouts (the maker).",
    ),
    "settlement-account": Lazy(
        "switch.cli.payouts:settlement_account_command",
        "Set or correct an INSTITUTION's settlement bank and account; its returned payouts are "
        "re-issued to it by the next day-end.",
    ),
    "status": Lazy(
        "switch.cli.dayend:status_command",
        "DATE's day-end: status, who ran and approved it, its files and payouts.",
    ),
    "verify": Lazy(
        "switch.cli.dayend:verify_command",
        "Check a payout or refund FILE: layout, trailer count and total, MAC (exit 1 if not).",
    ),
}

DEMO = {
    "cards": Lazy(
        "switch.cli.sandbox:cards_command",
        "The sandbox's TEST ONLY cards: card number (in full: test cards, not cardholder "
        "data), application serial, PIN, personal fund balance, card image.",
    ),
    "init": Lazy(
        "switch.cli.ledger:demo_init",
        "Institutions of each kind and level, terminals with PSAMs, cardholders with cards and "
        "funded personal accounts; names and ID numbers sealed under the home's PERSONAL_DATA "
        "key (made with the other centre keys if missing).",
    ),
    "sandbox": Lazy(
        "switch.cli.sandbox:sandbox_command",
        "Write the TEST ONLY sandbox (terminal keys, card and PSAM images, catalogue) of the "
        "demo deployment in $MEDSWITCH_HOME when it has none, and print its quick-start.",
    ),
}


@click.group("demo", cls=LazyGroup, lazy=DEMO)
def demo_group() -> None:
    """A demo deployment on the embedded SQLite database or on PostgreSQL."""


@click.group("sim", cls=LazyGroup, lazy=SIM)
def sim_group() -> None:
    """Simulators: a hospital charging system (HIS), a bank, a POS with its PSAM, a kiosk."""


@click.group("import", cls=LazyGroup, lazy=IMPORT)
def import_group() -> None:
    """Import counterparties' files."""


@click.group("dayend", cls=LazyGroup, lazy=DAYEND)
def dayend_group() -> None:
    """Day-end: cut-over, clearing, payouts approved by a second operator, payout files."""
