"""Head angles → glTF quaternions: signs per labels.py, order yaw·pitch·roll, helpers."""

import numpy as np
import pytest

from talkmotion.rotation import (head_quaternions, quaternion_conjugate, quaternion_matrices, quaternion_multiply,
                                 quaternion_power)

FORWARD, UP = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])


def turn(head, vector):
    return quaternion_matrices(head_quaternions(np.asarray(head, float))) @ vector


def test_each_angle_turns_the_way_labels_says():
    assert turn([30, 0, 0], FORWARD)[1] == pytest.approx(-np.sin(np.radians(30)))   # pitch + looks down
    assert turn([0, 30, 0], FORWARD)[0] == pytest.approx(np.sin(np.radians(30)))    # yaw + to its left (+X)
    assert turn([0, 0, 30], UP)[0] == pytest.approx(-np.sin(np.radians(30)))        # roll + to its right (-X)


def test_order_is_yaw_then_pitch_then_roll():
    q = head_quaternions(np.array([10.0, 20.0, 30.0]))
    rx, ry, rz = (quaternion_matrices(head_quaternions(np.array(a, float))) for a in
                  ([10, 0, 0], [0, 20, 0], [0, 0, 30]))
    np.testing.assert_allclose(quaternion_matrices(q), ry @ rx @ rz, atol=1e-12)


def test_batches_are_unit_with_non_negative_w():
    q = head_quaternions(np.random.default_rng(0).uniform(-180, 180, (50, 3)))
    assert q.shape == (50, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert (q[:, 3] >= 0).all()


def test_power_splits_a_rotation_into_two_that_compose_back():
    q = head_quaternions(np.array([[12.0, -25.0, 7.0]]))
    parts = quaternion_multiply(quaternion_power(q, 0.3), quaternion_power(q, 0.7))
    np.testing.assert_allclose(parts, q, atol=1e-12)
    np.testing.assert_allclose(quaternion_multiply(q, quaternion_conjugate(q)), [[0, 0, 0, 1]], atol=1e-12)


def test_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="pitch, yaw, roll"):
        head_quaternions(np.zeros((4, 2)))
