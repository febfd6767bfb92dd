"""Analysis tests: a package so its conftest is `analysis.conftest`, not a second top-level
`conftest` shadowing tests/conftest.py (which tests/ import from)."""
