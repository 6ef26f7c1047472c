"""The delegation history: its MAC chain, verification, and resealing to a new key."""
