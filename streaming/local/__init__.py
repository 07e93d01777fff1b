"""Local-only tooling, for people on one machine: the embedded single-node Kafka broker and the demo. Production
runs against configured brokers and never imports these."""
