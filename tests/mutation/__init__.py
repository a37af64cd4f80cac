"""Mutation testing: a catalogue of realistic kernel bugs (catalogue.py) and the routine that plants them (run.py)."""
