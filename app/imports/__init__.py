"""Importing a user's own catalog and ratings (admin)."""
