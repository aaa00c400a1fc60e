"""The `medswitch` command line: one entry point, one sub-command group per concern.

Every command is named here by dotted path and imported only when it runs (`switch.cli.lazy`):
`medswitch --help` and light commands such as `medswitch messages decode` start without the
ledger, the HSM or the database drivers. Add a command with one line in `COMMANDS` (its short
help is the first sentence of its docstring; `tests/switch/test_cli_lazy.py` checks both).
"""

from __future__ import annotations

import click

from switch.cli.lazy import Lazy, LazyGroup

COMMANDS = {
    "authorise": Lazy(
        "switch.cli.medical:authorise",
        "Special-expense authorisations per person and year (later written to the card).",
    ),
    "bank": Lazy("switch.cli.bank:bank_group", "The bank host links of the running daemon."),
    "bills": Lazy(
        "switch.cli.estate_lists:bills_group", "Medical bills: list and show (card numbers masked)."
    ),
    "blacklist": Lazy(
        "switch.cli.estate_lists:blacklist_group",
        "The blacklist: entries with reasons, each change a new version for the terminals.",
    ),
    "cards": Lazy(
        "switch.cli.cards:cards",
        "Cards: issuance (batch files, approval, personalisation), list and show (masked).",
    ),
    "catalogue": Lazy(
        "switch.cli.medical:catalogue",
        "The catalogue of drugs and services (药物标准管理): versions with effective dates.",
    ),
    "config": Lazy(
        "switch.cli.config_cmd:config_group",
        "The configuration: check a file, show the effective values, print the reference.",
    ),
    "dayend": Lazy(
        "switch.cli.groups:dayend_group",
        "Day-end: cut-over, clearing, payouts approved by a second operator, payout files.",
    ),
    "demo": Lazy(
        "switch.cli.groups:demo_group",
        "A demo deployment on the embedded SQLite database or on PostgreSQL.",
    ),
    "his": Lazy(
        "switch.cli.his:his_group",
        "The HIS interface on its own (the daemon mounts the same application).",
    ),
    "hsm": Lazy("switch.cli.hsm:hsm_group", "The network HSM."),
    "import": Lazy("switch.cli.groups:import_group", "Import counterparties' files."),
    "institutions": Lazy(
        "switch.cli.terminals:institutions_group",
        "Institutions: add, list, show, disable, enable, authorise-health, revoke-health"
        " (audited).",
    ),
    "keys": Lazy(
        "switch.cli.keys:keys",
        "Key ceremonies: components, LMK, keys (shown by KCV only), audit log.",
    ),
    "ledger": Lazy(
        "switch.cli.ledger:ledger_group",
        "The money: balances, history, items in review, schema migrations.",
    ),
    "ledger-files": Lazy(
        "switch.cli.ledger_files:ledger_files",
        "Build contributions and cardholders files (specs/ledger-files.md) from CSV.",
    ),
    "messages": Lazy(
        "switch.cli.messages:messages",
        "Decode ISO 8583 frames of the terminal and bank interfaces.",
    ),
    "nac": Lazy(
        "switch.cli.nac:nac_group",
        "The network access controller: modem lines in, routed by TPDU to hosts.",
    ),
    "operators": Lazy(
        "switch.cli.operators:operators_group",
        "Operators: roles, passwords (scrypt), logins for back-office and key commands.",
    ),
    "parameters": Lazy(
        "switch.cli.estate_lists:parameters_group",
        "Terminal parameters: versioned offline limits and categories per group or institution.",
    ),
    "policy": Lazy(
        "switch.cli.medical:policy",
        "The insurance policy per calendar year (a TOML file, specs/medical-files.md §3).",
    ),
    "psams": Lazy(
        "switch.cli.cards:psams",
        "PSAMs: personalisation, bound to a terminal; list, show, disable, enable, unbind.",
    ),
    "review": Lazy(
        "switch.cli.review:review_group",
        "The review queue: exceptions held for a person, with maker-checker adjustments.",
    ),
    "routes": Lazy(
        "switch.cli.serve:routes",
        "Print the route table, terminal and bank interfaces (checked for ambiguity when "
        "built); kiosk EP loads by card BIN to the configured bank links.",
    ),
    "run": Lazy(
        "switch.cli.serve:run",
        "What `make run` does: set up the demo deployment if there is none, then serve.",
    ),
    "serve": Lazy(
        "switch.cli.serve:serve",
        "Run the switch: terminal listener, the bank link ([bank] enabled), /metrics, "
        "/healthz, /readyz.",
    ),
    "sim": Lazy(
        "switch.cli.groups:sim_group",
        "Simulators: a hospital charging system (HIS), a bank, a POS with its PSAM, a kiosk.",
    ),
    "status": Lazy(
        "switch.cli.status:status",
        "The running daemon's health and money at risk: terminals, bank links, SAF, loads in "
        "doubt, review queue, day-end, ledger writer (exit 1 when something needs attention).",
    ),
    "statements": Lazy(
        "switch.cli.statements:statements_group",
        "Statements for institutions and employer units (CSV and HTML).",
    ),
    "terminals": Lazy(
        "switch.cli.terminals:terminals_group",
        "Terminals: add, list, show, disable, enable, move, replace the PSAM (audited).",
    ),
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medswitch")
def main() -> None:
    """medswitch — transaction switch for a medical-insurance IC-card network."""
