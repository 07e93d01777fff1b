"""Benchmarks of the batch layer, for people (`jobrec bench implicit`); the pipeline never imports them."""
