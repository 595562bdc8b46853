"""What the connectors' sandbox servers run on: a threaded HTTP server base and deterministic synthetic schools."""
