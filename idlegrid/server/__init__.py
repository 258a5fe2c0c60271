"""The control plane: REST API, background loops and the database."""
