"""Clearing service: business dates, trades, fees, netting, EOD, bank files, reconciliation."""
