"""The bank interface's inbound routes (the bank as acquirer for its counters)."""

from __future__ import annotations

from routing import bank_counter as bc
from routing import bank_ep
from routing.table import Handler, Route, RouteTable


def bank_routes() -> RouteTable:
    def route(mti: str, f3: str | None, f70: str | None, handler: Handler, text: str) -> Route:
        # Loads name their source account (F3 digits 3-4): 00 the personal fund in the local
        # ledger, 10 the cardholder's savings behind the bank link.
        account = f3[2:4] if f3 is not None and f3[:2] in ("60", "61") else None
        return Route(
            "bank",
            mti,
            processing_code=f3,
            network_code=f70,
            account_type=account,
            handler=handler,
            description=text,
        )

    return RouteTable(
        [
            route("0800", None, "001", bc.handle_bank_sign_on, "link sign-on"),
            route("0800", None, "002", bc.handle_bank_sign_off, "link sign-off"),
            route("0800", None, "301", bc.handle_bank_echo, "link echo"),
            route("0800", None, "101", bc.handle_key_change, "zone keys under the ZMK, KCVs"),
            route("0200", "310000", None, bc.handle_counter_inquiry, "counter inquiry"),
            route("0200", "600000", None, bc.handle_counter_ed_load, "counter ED load: MAC2"),
            route("0220", "600000", None, bc.handle_counter_ed_load_confirm, "load TAC"),
            route("0200", "601000", None, bank_ep.handle_counter_ep_load, "EP load from savings"),
            route("0220", "601000", None, bank_ep.handle_counter_ep_load_confirm, "EP load TAC"),
            route("0200", "610000", None, bc.handle_counter_unload, "counter ED unload: MAC2"),
            route("0220", "610000", None, bc.handle_counter_unload_confirm, "unload MAC3"),
            route("0100", "700000", None, bc.handle_pin_reload, "PIN reload: DRPK MAC"),
            route("0100", "710000", None, bc.handle_pin_unblock, "PIN unblock: DPUK command"),
            route("0100", "720000", None, bc.handle_loss_report, "loss report 挂失"),
            route("0100", "730000", None, bc.handle_unloss, "unloss 解挂"),
            route("0100", "740000", None, bc.handle_cancel, "cancel 注销: blacklisted, swept"),
            route("0100", "750000", None, bc.handle_card_replacement, "card replacement"),
        ]
    )
