"""One module per output distribution."""
