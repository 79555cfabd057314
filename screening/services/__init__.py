"""Use cases: one module per thing the system does; they own transactions and ordering."""
