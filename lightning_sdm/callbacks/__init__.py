"""Training callbacks: sample generation."""
