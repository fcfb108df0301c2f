"""Pure clearing domain logic: no I/O, no framework, no database.

Money is integer fen everywhere inside; decimal strings appear only in the bank
files and in the JSON form of the reconciliation report.
"""
