"""Repositories: all SQL of the service lives here, one module per domain.  They flush, never commit."""
