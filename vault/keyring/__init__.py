"""The keyring: encryption at rest, what each column is sealed to, key wrapping, rotation."""
