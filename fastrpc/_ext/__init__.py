"""Compiled modules built from ext/*.pyx (see fastrpc._impl for the selection)."""
