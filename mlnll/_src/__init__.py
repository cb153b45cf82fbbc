"""Private implementation of mlnll; import from ``mlnll`` instead."""
