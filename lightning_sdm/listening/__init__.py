"""Blind pairwise listening tests: pairing two systems' samples, recording answers, the
report."""
