"""Storage layer: connections, migrations, sinks and queries. Thin on purpose; SQL lives here only."""
