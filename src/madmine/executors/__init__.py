"""Executors: the only places that know how stages run (in-process, or on Ray Data)."""
