"""The terminal interface's routes: which handler serves which transaction."""

from __future__ import annotations

from collections.abc import Sequence

from routing import (
    bank_ep,
    batch,
    downloads,
    inquiry,
    loads,
    network,
    purchases,
    reversals,
    settlement,
)
from routing.bank_context import SavingsRoute
from routing.table import Route, RouteTable


def savings_load_routes(banks: Sequence[SavingsRoute]) -> list[Route]:
    """EP loads from savings at a kiosk, routed by the card's BIN to its bank's link; a card of
    no configured bank is answered 92 (no route)."""
    routes = [
        Route(
            "terminal",
            "0200",
            processing_code="601000",
            txn_type="46",
            bin_prefix=prefix,
            handler=bank_ep.kiosk_ep_load_via(bank.issuer, bank.bank_id),
            description=f"EP load from savings at bank {bank.bank_id}: MAC1, PIN, debit, MAC2",
        )
        for bank in banks
        for prefix in bank.bins or ("",)
    ]
    if not any(route.bin_prefix == "" for route in routes):
        routes.append(
            Route(
                "terminal",
                "0200",
                processing_code="601000",
                txn_type="46",
                handler=bank_ep.kiosk_ep_load_via(None, ""),
                description="EP load of a card no bank link serves: 92",
            )
        )
    routes.append(
        Route(
            "terminal",
            "0220",
            processing_code="601000",
            txn_type="46",
            handler=bank_ep.handle_kiosk_ep_load_confirm,
            description="EP load confirmation (TAC) or proof: in doubt → EP shadow",
        )
    )
    return routes


def terminal_routes(banks: Sequence[SavingsRoute] = ()) -> RouteTable:
    """The terminal routes; ``banks``: the savings links EP loads are routed to by BIN."""
    return RouteTable(
        [
            Route(
                "terminal",
                "0800",
                txn_type="00",
                network_code="001",
                handler=network.handle_sign_on,
                description="sign-on, single-length keys",
            ),
            Route(
                "terminal",
                "0800",
                txn_type="00",
                network_code="003",
                handler=network.handle_sign_on,
                description="sign-on, double-length keys",
            ),
            Route(
                "terminal",
                "0800",
                txn_type="00",
                network_code="004",
                handler=network.handle_sign_on,
                description="sign-on with TDK",
            ),
            Route(
                "terminal",
                "0820",
                txn_type="00",
                network_code="002",
                handler=network.handle_sign_off,
                description="sign-off",
            ),
            Route(
                "terminal",
                "0820",
                txn_type="00",
                network_code="301",
                handler=network.handle_echo,
                description="echo",
            ),
            Route(
                "terminal",
                "0800",
                txn_type="00",
                network_code="360",
                handler=downloads.handle_parameter_download,
                description="parameter download: offline limits, categories",
            ),
            Route(
                "terminal",
                "0800",
                txn_type="00",
                network_code="370",
                handler=downloads.handle_blacklist_download,
                description="incremental blacklist download by version",
            ),
            Route(
                "terminal",
                "0200",
                processing_code="000000",
                txn_type="22",
                handler=settlement.handle_settlement,
                description="medical settlement of a HIS bill: approved with its split",
            ),
            Route(
                "terminal",
                "0200",
                processing_code="200000",
                txn_type="23",
                handler=reversals.handle_void,
                description="void of a settled bill: shares back where they came from",
            ),
            Route(
                "terminal",
                "0400",
                handler=reversals.handle_reversal,
                description="reversal: the approval cancelled; loads only flagged for proof",
            ),
            Route(
                "terminal",
                "0220",
                processing_code="000000",
                txn_type="22",
                handler=settlement.handle_cash_close,
                description="settled bill closed in cash: pooled share and accumulators, once",
            ),
            Route(
                "terminal",
                "0220",
                processing_code="000000",
                txn_type="30",
                handler=purchases.handle_debit_advice,
                description="card debit confirmed by its TAC: posted once per PSAM serial",
            ),
            Route(
                "terminal",
                "0320",
                processing_code="000000",
                txn_type="30",
                network_code="201",
                handler=batch.handle_batch_upload,
                description="batch upload of a card debit: TAC verified, on file, posted once",
            ),
            Route(
                "terminal",
                "0320",
                txn_type="00",
                network_code="207",
                handler=batch.handle_batch_upload_end,
                description="end of batch upload: its count against the records on file",
            ),
            Route(
                "terminal",
                "0500",
                txn_type="00",
                network_code="201",
                handler=batch.handle_batch_settlement,
                description="batch settlement: TAC-confirmed debits on file against F48",
            ),
            Route(
                "terminal",
                "0200",
                processing_code="310000",
                txn_type="01",
                handler=inquiry.handle_balance_inquiry,
                description="balances: personal fund, card ED and EP shadows",
            ),
            Route(
                "terminal",
                "0200",
                processing_code="320000",
                txn_type="02",
                handler=inquiry.handle_history_inquiry,
                description="history: the latest postings on the card's fund, ED and EP",
            ),
            Route(
                "terminal",
                "0200",
                processing_code="600000",
                txn_type="45",
                handler=loads.handle_ed_load,
                description="ED load from the personal fund",
            ),
            Route(
                "terminal",
                "0220",
                processing_code="600000",
                txn_type="45",
                handler=loads.handle_ed_load_confirm,
                description="ED load confirmation (TAC) or proof",
            ),
            *savings_load_routes(banks),
        ]
    )
