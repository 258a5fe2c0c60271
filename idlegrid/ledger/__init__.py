"""The ledger: a double-entry book over the database, and the chain it settles with."""
