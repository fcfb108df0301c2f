"""The phases of an end-of-day run, in order (a module of its own so that the staff CLI
can show them without importing the service)."""

#: Phases in order; ``phase`` of a run is the one it is working on ("done" at the end).
PHASES = ("roll", "completeness", "net", "settle", "instructions", "report")
DONE = "done"
