"""Model definitions modelpress ships (no weights: those come from packages or training)."""
