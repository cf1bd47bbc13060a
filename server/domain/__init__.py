"""Vocabulary of the domain: enumerations and fixed catalogues, with no I/O and no framework."""
