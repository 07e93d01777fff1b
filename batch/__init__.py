"""jobrec.batch: what runs periodically (CSV backfill, ALS retrain behind the quality gate, top-N publishing, the
job catalog's table), the Delta helpers and the process edges (SparkSession, Kafka settings), with the pure logic
in `core`. It imports only itself and jobrec.schemas."""
