"""A custody bank simulator (资金存管银行) for tests and demos.

It is deliberately separate from the services: it reads the exchange's settlement
instruction file and writes the bank statement file with its own code (only the
money helpers of ``shared`` are reused), so a format mistake on either side shows.
"""

from banksim.bank import Bank, BankError, Booking, StatementInjection, SubAccount

__all__ = ["Bank", "BankError", "Booking", "StatementInjection", "SubAccount"]
