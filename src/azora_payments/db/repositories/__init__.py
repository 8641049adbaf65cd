"""Repositories: every query of the service lives here."""
