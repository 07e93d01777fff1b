"""Benchmarks that print figures beside a reference measured in the same run (`jobrec bench ingest|retrain|
freshness|api`); each starts its own broker in a temporary folder. The pipeline never imports them."""
