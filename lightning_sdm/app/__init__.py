"""The local web app: generate and listen, and blind A/B listening tests."""
