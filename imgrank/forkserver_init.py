"""Imported by multiprocessing's fork server at its start (workers.py lists it to preload), and by
nothing else: the fork server dies with the command that started it (see parentdeath.py)."""

from imgrank.parentdeath import die_with_parent

die_with_parent()
