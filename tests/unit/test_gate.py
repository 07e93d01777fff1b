from jobrec.batch.core.gate import decide


def test_first_model_needs_only_to_beat_popularity() -> None:
    assert decide(0.25, 0.18, None, 0.01, 10).publish
    d = decide(0.17, 0.18, None, 0.01, 10)
    assert not d.publish and "does not beat popularity" in d.reason


def test_a_worse_model_than_the_serving_one_is_held_back() -> None:
    assert decide(0.295, 0.18, 0.30, 0.01, 10).publish  # within tolerance
    d = decide(0.28, 0.18, 0.30, 0.01, 10)
    assert not d.publish and "below the serving model's 0.3000" in d.reason
