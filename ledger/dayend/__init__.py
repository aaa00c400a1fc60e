"""Day-end (DESIGN §5): the business date and its cut-over, clearing, payouts approved by a second
operator, payout and refund files. `medswitch dayend` (switch/cli/dayend.py) drives it."""
