"""The recommender's pure logic, shared by the batch and the speed layer: numpy and the standard library only,
no Spark, no Kafka, no files (a contract test keeps it so). Confidence and decay, the fold-in solve, top-N under
the catalog's rules, ranking metrics, holdout splits, evaluation and the quality gate's decision."""
