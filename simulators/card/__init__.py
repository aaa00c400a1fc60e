"""The virtual PBOC ED/EP medical-insurance card (see `simulators.card.card`)."""

from simulators.card.apdu import Apdu, CardStatus, PowerLost
from simulators.card.card import APP_AID, APP_FID, ATR, Tear, VirtualCard
from simulators.card.state import CardKey, CardState

__all__ = [
    "APP_AID",
    "APP_FID",
    "ATR",
    "Apdu",
    "CardKey",
    "CardState",
    "CardStatus",
    "PowerLost",
    "Tear",
    "VirtualCard",
]
