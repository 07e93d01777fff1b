"""jobrec.schemas: the contracts. JSON Schemas of the click event, job event and recommendation messages with
their parsers and rejection reasons, the Delta table schemas, and the config schema with its defaults. The lowest
layer: it imports nothing else of jobrec and needs no JVM."""
