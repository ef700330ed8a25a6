"""The .dln grammar and parser front."""

from dlc.grammar.parser import parse, parse_file

__all__ = ["parse", "parse_file"]
