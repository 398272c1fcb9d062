"""Loaders: sniff content, apply the trust policy, hand back a ModelHandle."""
