"""The HTTP surface, one module per API family."""
