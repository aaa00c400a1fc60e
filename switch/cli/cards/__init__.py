"""`medswitch cards` and `medswitch psams`: issuance from the ledger's cardholders to
personalised cards (issue → approve by a second operator → personalize), and PSAMs bound to
terminals. Keys stay in the HSM (the key home of `medswitch keys`); cards are reached through
PC/SC readers (`--reader`, repeatable: each card is looked for by its serial in every reader).

    medswitch cards issue --out batches/            # maker
    medswitch cards approve batches/cards-….bat     # checker, another operator
    medswitch cards personalize batches/cards-….bat --reader "Virtual PCD 00 00"
    medswitch cards activate batches/cards-….bat --personalised-by acme  # a bureau's
    medswitch psams personalize --reader "Virtual PCD 00 01" --terminal 00000001 …

Every step goes to the key home's audit log. Cards are recorded in the ledger's `cards` table
as `issued` when their batch is made and `active` once personalised (by the centre, or by a
bureau from the keys exported to it: specs/key-ceremony.md, then `cards activate`).
"""

from __future__ import annotations

from typing import Any

import click

from switch.cli.cards import issuing, psam_commands, views, writing
from switch.cli.cards.context import group_options, make_context


@click.group()
@group_options
@click.pass_context
def cards(ctx: click.Context, /, **kwargs: Any) -> None:
    """Cards: issuance (batch files, approval, personalisation), list and show (masked)."""
    ctx.obj = make_context(ctx, **kwargs)


@click.group()
@group_options
@click.pass_context
def psams(ctx: click.Context, /, **kwargs: Any) -> None:
    """PSAMs: personalisation, bound to a terminal; list, show, disable, enable, unbind."""
    ctx.obj = make_context(ctx, **kwargs)


for _command in (issuing.issue, issuing.approve, issuing.activate, issuing.replace,
                 writing.personalize, writing.factory_keys, writing.write_authorisation,
                 views.list_cards, views.show_card):
    cards.add_command(_command)
for _command in (psam_commands.issue, psam_commands.approve, psam_commands.personalize,
                 views.list_psams, views.show_psam, views.disable_psam, views.enable_psam,
                 views.unbind_psam):
    psams.add_command(_command)

__all__ = ["cards", "psams"]
