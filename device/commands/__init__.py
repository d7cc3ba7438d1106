"""Implementations of the `appliance` subcommands; device/cli.py only parses and dispatches."""
