"""Composition helpers shared by the CLI commands: turn the validated config into each part's settings."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from pyspark.sql import SparkSession

from batch.jobs_table import read_catalog_rows
from batch.publish import publish_recommendations, recommend_top_n
from batch.retrain import gated_retrain
from batch.train import AlsParams, TrainedModel, read_factors
from schemas import tables as t
from schemas.click_event import EventLimits
from schemas.config import Config
from streaming.connections import spark_kafka_options
from streaming.delta_tables import absolute_location, ensure_delta_table
from streaming.ingest import IngestSettings

log = logging.getLogger(__name__)


def ingest_settings(cfg: Config, bootstrap: str) -> IngestSettings:
    return IngestSettings(
        tables_root=cfg.storage.tables_root,
        checkpoint=f"{absolute_location(cfg.storage.checkpoints_root).rstrip('/')}/ingest",
        clicks_topic=cfg.kafka.clicks_topic,
        kafka_options=spark_kafka_options(cfg.kafka, bootstrap),
        starting_offsets=cfg.ingest.starting_offsets,
        max_offsets_per_trigger=cfg.ingest.max_offsets_per_trigger,
        dedup_window=cfg.ingest.dedup_window,
        limits=EventLimits(cfg.ingest.max_record_bytes, cfg.ingest.max_future_seconds, cfg.ingest.max_past_days),
        weights=cfg.ingest.weights,
        jobs_topic=cfg.kafka.jobs_topic,
        categories=tuple(cfg.catalog.categories),
        aliases=tuple(cfg.catalog.aliases.items()),
        default_ttl_days=cfg.catalog.default_ttl_days,
    )


def als_params(cfg: Config) -> AlsParams:
    a = cfg.als
    return AlsParams(
        a.rank,
        a.max_iter,
        a.reg_param,
        a.alpha,
        a.seed,
        a.checkpoint_interval,
        a.confidence,
        a.epsilon,
        a.half_life_days,
    )


def retrain_and_publish(spark: SparkSession, cfg: Config, bootstrap: str | None, publish: bool = True) -> TrainedModel:
    """Train on the newest interactions behind the quality gate, record the model, and publish its top-N lists
    if it passed (and `publish`)."""
    model, decision = gated_retrain(
        spark, cfg.storage.tables_root, als_params(cfg), cfg.gate, cfg.retrain.min_interactions
    )
    log.info("model %s: %s; timings %s", model.model_version, decision.reason, model.timings)
    if decision.publish and publish and bootstrap:
        publish_model(spark, cfg, bootstrap, model.model_version)
    return model


def publish_model(spark: SparkSession, cfg: Config, bootstrap: str, model_version: str) -> int:
    generated_at = datetime.now(timezone.utc)
    user_factors, job_factors = read_factors(spark, cfg.storage.tables_root, model_version)
    interactions = spark.read.format("delta").load(ensure_delta_table(spark, cfg.storage.tables_root, t.INTERACTIONS))
    recs = recommend_top_n(
        spark,
        user_factors,
        job_factors,
        interactions,
        cfg.publish.top_n,
        model_version,
        generated_at,
        read_catalog_rows(spark, cfg.storage.tables_root),
        cfg.publish.max_per_category,
        new_user_list=True,
    )
    return publish_recommendations(
        spark,
        recs,
        cfg.storage.tables_root,
        spark_kafka_options(cfg.kafka, bootstrap),
        cfg.kafka.recommendations_topic,
        model_version,
        generated_at,
    )


def run_speed(spark: SparkSession, cfg: Config, bootstrap: str, should_stop, stats=None, on_ready=None, heartbeat=None):
    """The speed layer's composition: consumer at the end of the clicks topic, histories, model holder."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from batch.catalog import CatalogState, CategoryNormaliser
    from streaming.connections import python_client_args
    from streaming.speed import Histories, ModelHolder, run_speed_layer
    from streaming.speed_sources import load_histories, load_serving_model

    client = python_client_args(cfg.kafka, bootstrap)
    consumer = KafkaConsumer(**client, enable_auto_commit=False, fetch_max_wait_ms=20)
    partitions = [
        TopicPartition(topic, p)
        for topic in (cfg.kafka.clicks_topic, cfg.kafka.jobs_topic)
        for p in consumer.partitions_for_topic(topic)
    ]
    consumer.assign(partitions)
    # take the topics' ends before the snapshots: clicks and job events after them are applied from the topics
    consumer.seek_to_end(*partitions)
    for tp in partitions:
        consumer.position(tp)
    catalog = CatalogState(
        CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases), cfg.catalog.default_ttl_days
    )
    catalog.load(read_catalog_rows(spark, cfg.storage.tables_root))
    histories = Histories(cfg.ingest.weights)
    n_rows = load_histories(spark, cfg.storage.tables_root, histories)
    models = ModelHolder(
        lambda current: load_serving_model(spark, cfg.storage.tables_root, current), cfg.fold_in.model_check_seconds
    ).start()
    log.info(
        "speed layer ready: %d users (%d interactions), %d catalog jobs (%d not recommendable), model %s",
        len(histories.users),
        n_rows,
        len(catalog.jobs),
        len(catalog.unavailable(datetime.now(timezone.utc))),
        models.model.model_version if models.model else "none yet",
    )
    producer = KafkaProducer(**client, acks="all", linger_ms=0)
    if on_ready:
        on_ready()
    try:
        return run_speed_layer(
            consumer,
            producer,
            cfg.kafka.recommendations_topic,
            models,
            histories,
            cfg.publish.top_n,
            EventLimits(cfg.ingest.max_record_bytes, cfg.ingest.max_future_seconds, cfg.ingest.max_past_days),
            should_stop,
            stats,
            heartbeat or (lambda: None),
            catalog,
            cfg.kafka.jobs_topic,
            cfg.publish.max_per_category,
        )
    finally:
        models.stop()
        consumer.close()
        producer.close()


def build_api(cfg: Config, bootstrap: str):
    """(FastAPI app, stop function): the ingest/read API with its Kafka producer and recommendations follower."""
    from kafka import KafkaProducer

    from streaming.clients import RecommendationsConsumer
    from streaming.connections import python_client_args
    from streaming.http_api import ApiSettings, LatestLists, create_app

    client = python_client_args(cfg.kafka, bootstrap)
    timeout_ms = int(cfg.api.kafka_timeout_seconds * 1000)
    producer = KafkaProducer(**client, acks="all", linger_ms=2, max_block_ms=timeout_ms, request_timeout_ms=timeout_ms)
    lists = LatestLists()
    lists.follow(lambda: RecommendationsConsumer(topic=cfg.kafka.recommendations_topic, **client))
    settings = ApiSettings(
        cfg.kafka.clicks_topic,
        cfg.kafka.recommendations_topic,
        cfg.kafka.jobs_topic,
        cfg.api.max_body_bytes,
        cfg.api.max_batch_events,
        cfg.api.token,
        cfg.api.kafka_timeout_seconds,
        EventLimits(cfg.ingest.max_record_bytes, cfg.ingest.max_future_seconds, cfg.ingest.max_past_days),
    )

    def stop() -> None:
        lists.stop()
        producer.close(timeout=5)

    from streaming.connections import any_broker_reachable

    return create_app(settings, producer, lists, lambda: any_broker_reachable(bootstrap)), stop
