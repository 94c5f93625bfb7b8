"""layerstore benchmarks (scripts, not tests): ``.venv/bin/python -m bench --help``."""
