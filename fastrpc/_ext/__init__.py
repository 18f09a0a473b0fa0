"""Compiled builds of the twin modules (fastrpc._impl.TWINS lists them and chooses)."""
