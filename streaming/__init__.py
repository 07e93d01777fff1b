"""jobrec.streaming: what runs continuously (the Kafka ingest into Delta, the job-events query, the speed layer,
the HTTP API, the Python clients) and the `jobrec` command line. The top layer: it may import jobrec.batch and
jobrec.schemas; local tooling lives in `local`, benchmarks in `bench`."""
