"""Imported by record.py from its own folder."""

VALUE = "helper-ok"
