"""Bring models trained elsewhere into our directory format."""
