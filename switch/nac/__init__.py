"""The network access controller for dial-up POS: modem lines answered, frames routed by
TPDU to hosts over persistent TCP connections (specs/dialup.md)."""
