"""Small shared helpers: atomic file writes, environment info, seeding, logging setup."""
