"""Example workers, shipped with the package so `iii demo` runs after any install."""
