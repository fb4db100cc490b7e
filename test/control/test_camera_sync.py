"""control/camera_sync.py: camera frames checked and converted as evaluation converts them, and window
steps assembled from a joint state and one frame per camera with matching stamps; their counts in the
ledger and the diagnostics."""
import numpy as np
import pytest

from paradigms_policy.control.camera_sync import (Camera, CameraSync, RawFrame, default_image_topic, frame_input,
                                                  policy_cameras)
from paradigms_policy.control.diagnostics import ERROR, WARN, DiagnosticsReporter
from paradigms_policy.control.ledger import ChunkLedger
from paradigms_policy.control.timing import NS_PER_MS
from paradigms_policy.vision import image_input

P = 100 * NS_PER_MS  # control period, 10 Hz
S = 1_700_000_000 * 10**9
TOLERANCE = 20 * NS_PER_MS
MAX_AGE = 200 * NS_PER_MS
CAMERA = Camera("image", 24, 32, "image")  # not square: height and width must not be swapped


def rgb_frame(seed=0, height=24, width=32):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def raw(pixels, encoding="rgb8", stamp=S, step=None, data=None):
    height, width = pixels.shape[:2]
    return RawFrame(stamp, height, width, encoding, 3 * width if step is None else step,
                    pixels.tobytes() if data is None else data)


def test_rgb8_and_bgr8_frames_become_image_input_of_the_rgb_frame():
    rgb = rgb_frame()
    expected = image_input(rgb)
    padded = np.concatenate([rgb.reshape(24, 96), np.full((24, 4), 7, np.uint8)], axis=1)  # rows of step 100
    for frame in (raw(rgb), raw(np.ascontiguousarray(rgb[..., ::-1]), "bgr8"),
                  raw(rgb, step=100, data=padded.tobytes())):
        verdict, image = frame_input(frame, CAMERA)
        assert verdict.accepted and image.dtype == np.float32 and image.shape == (3, 24, 32)
        assert np.array_equal(image, expected), frame.encoding


@pytest.mark.parametrize("frame, reason", [
    (raw(rgb_frame(), "mono8"), "wrong_encoding"),
    (raw(rgb_frame(), "rgba8"), "wrong_encoding"),
    (raw(rgb_frame(height=32, width=24)), "wrong_size"),  # the camera's size transposed
    (raw(rgb_frame(height=48, width=64)), "wrong_size"),
    (raw(rgb_frame(), step=95), "bad_layout"),  # a row of 32 RGB pixels needs 96 bytes
    (raw(rgb_frame(), data=rgb_frame().tobytes()[:-1]), "bad_layout"),  # data is not step x height bytes
    (raw(rgb_frame(), step=100), "bad_layout"),
])
def test_wrong_encoding_size_and_layout_are_rejected_with_the_reason(frame, reason):
    verdict, image = frame_input(frame, CAMERA)
    assert (verdict.accepted, verdict.reason, image) == (False, reason, None)
    assert verdict.message


def test_cameras_follow_the_image_keys_and_default_to_their_names():
    from image_policy import image_policy_config

    config = image_policy_config(cameras=(("left", (3, 24, 32)), ("observation.image", (3, 16, 16))), crop_shape=None)
    assert policy_cameras(config) == [Camera("left", 24, 32, "left"),
                                      Camera("observation.image", 16, 16, "observation_image")]
    assert [c.topic for c in policy_cameras(config, ["cam/left", "cam/wrist"])] == ["cam/left", "cam/wrist"]
    assert default_image_topic("image") == "image"


def two_cameras(max_age=MAX_AGE):
    return CameraSync([Camera("left", 24, 32, "left"), Camera("right", 24, 32, "right")], TOLERANCE, max_age, P)


def image(value):
    return np.full((3, 24, 32), value, np.float32)


def agent(x):
    return {"agent_pos": np.array([x, x + 1.0], np.float32)}


def test_frame_stamps_are_checked_per_camera_as_observation_stamps():
    sync = two_cameras()
    now = S + 10 * NS_PER_MS
    assert sync.add_frame("left", 0, image(0), now).reason == "no_stamp"
    assert sync.add_frame("left", now - 300 * NS_PER_MS, image(0), now).reason == "stale"
    assert sync.add_frame("left", now + 300 * NS_PER_MS, image(0), now).reason == "future"
    assert sync.add_frame("left", S, image(0), now).accepted
    assert sync.add_frame("left", S, image(0), now).reason == "out_of_order"
    assert sync.add_frame("right", S, image(0), now).accepted  # each camera has its own order
    sync.max_age_ns = 0  # max_observation_age_ms 0, set at run time: no age check
    assert sync.add_frame("left", S + 1, image(0), now + 10**12).accepted


def test_the_newest_complete_set_within_the_tolerance_becomes_the_step():
    sync = two_cameras()
    now = S + 2 * P
    sync.add_joint_state(agent(1.0), S)
    sync.add_joint_state(agent(2.0), S + P)
    sync.add_frame("left", S + P - 15 * NS_PER_MS, image(0.1), now)
    sync.add_frame("left", S + P + 5 * NS_PER_MS, image(0.2), now)  # the nearest to S + P
    sync.add_frame("right", S + P - 25 * NS_PER_MS, image(0.3), now)  # outside the tolerance
    assert sync.complete(now) is None
    sync.add_frame("right", S + P + 20 * NS_PER_MS, image(0.4), now)  # at the tolerance
    step, stamp = sync.complete(now)
    assert stamp == S + P  # the joint state's stamp
    assert set(step) == {"left", "right", "agent_pos"}
    assert np.array_equal(step["left"], image(0.2)) and np.array_equal(step["right"], image(0.4))
    assert np.array_equal(step["agent_pos"], [2.0, 3.0])
    assert sync.unmatched == 1  # the joint state at S never completed and is superseded
    assert sync.complete(now) is None  # a set is used once


def test_an_older_set_completes_when_its_frame_arrives_late():
    sync = two_cameras()
    now = S + P + 10 * NS_PER_MS
    sync.add_frame("left", S, image(0.1), now)
    sync.add_joint_state(agent(1.0), S)
    sync.add_joint_state(agent(2.0), S + P)  # its frames have not come yet
    assert sync.complete(now) is None
    sync.add_frame("right", S + 3 * NS_PER_MS, image(0.2), now)
    step, stamp = sync.complete(now)
    assert stamp == S and np.array_equal(step["agent_pos"], [1.0, 2.0]) and sync.unmatched == 0
    sync.add_frame("left", S + P, image(0.3), now)
    sync.add_frame("right", S + P, image(0.4), now)
    step, stamp = sync.complete(now)
    assert stamp == S + P and np.array_equal(step["right"], image(0.4))


def test_nothing_stale_enters_a_step():
    sync = two_cameras()
    sync.add_joint_state(agent(1.0), S)
    sync.add_frame("left", S, image(0.1), S)
    sync.add_frame("right", S, image(0.2), S)
    assert sync.complete(S + MAX_AGE + 1) is None and sync.unmatched == 1  # the joint state grew too old
    # A fresh joint state, but the left frame within the tolerance of it is older than the age limit.
    joint_stamp = S + 10 * P
    sync.add_frame("left", joint_stamp - TOLERANCE, image(0.3), joint_stamp)
    sync.add_frame("right", joint_stamp, image(0.4), joint_stamp)
    sync.add_joint_state(agent(2.0), joint_stamp)
    now = joint_stamp + MAX_AGE - 10 * NS_PER_MS
    assert sync.complete(now) is None
    sync.add_frame("left", joint_stamp + 1, image(0.5), now)
    step, stamp = sync.complete(now)
    assert stamp == joint_stamp and np.array_equal(step["left"], image(0.5))


def test_a_silent_camera_yields_no_step_and_is_reported():
    sync = two_cameras()
    assert sync.silent_cameras() == []  # nothing has come yet: no camera to blame
    steps = []
    for k in range(10):
        stamp = S + k * P
        sync.add_joint_state(agent(float(k)), stamp)
        sync.add_frame("left", stamp, image(0.1), stamp)
        if k < 4:  # the right camera stops after four frames
            sync.add_frame("right", stamp, image(0.2), stamp)
        steps.append(sync.complete(stamp))
        expected_silent = ["right"] if (k - 3) * P > sync.silent_after_ns else []
        assert sync.silent_cameras() == expected_silent, k
    assert [step is not None for step in steps] == [True] * 4 + [False] * 6
    stats = sync.statistics(S + 9 * P)
    assert stats["silent_cameras"] == ["right"] and sync.silent_after_ns == 3 * P + TOLERANCE
    assert (stats["camera_left_frame_age_ms"], stats["camera_right_frame_age_ms"]) == (0.0, 600.0)
    assert stats["observations_unmatched"] == 3  # those of steps 4..6, older than MAX_AGE at step 9
    sync.clear()
    assert sync.silent_cameras() == [] and sync.statistics(S)["camera_right_frame_age_ms"] is None


def test_a_camera_that_never_sends_is_silent_once_joint_states_have_come_long_enough():
    sync = two_cameras(max_age=0)
    silent = []
    for k in range(5):
        sync.add_joint_state(agent(float(k)), S + k * P)
        sync.add_frame("left", S + k * P, image(0.1), S + k * P)
        assert sync.complete(S + k * P) is None
        silent.append(sync.silent_cameras())
    assert silent == [[], [], [], [], ["right"]]  # 4 periods after the first joint state: beyond 3 + tolerance


def test_frames_are_counted_by_reason_and_silence_is_an_error_in_the_diagnostics():
    from paradigms_policy.control.observations import Verdict

    ledger = ChunkLedger(frames=True)
    for verdict in (Verdict(True), Verdict(False, "wrong_size"), Verdict(False, "wrong_encoding"),
                    Verdict(False, "wrong_size")):
        ledger.frame(verdict)
    stats = ledger.statistics()
    assert (stats["frames_received"], stats["frames_accepted"], stats["frames_rejected"]) == (4, 1, 3)
    assert (stats["frames_rejected_wrong_size"], stats["frames_rejected_wrong_encoding"],
            stats["frames_rejected_bad_layout"]) == (2, 1, 0)
    assert stats["observations_rejected"] == 0  # frames are not observations
    assert "frames_received" not in ChunkLedger().statistics()  # a low-dim policy's node has no frames

    reporter = DiagnosticsReporter()
    base = dict(deadline_misses=0, observations_rejected=0, inference_errors=0, frames_rejected=0,
                silent_cameras=[])
    assert reporter.report(base).level == "ok"
    warned = reporter.report(dict(base, frames_rejected=3))
    assert (warned.level, warned.message) == (
        WARN, "0 deadline miss(es), 0 rejected observation(s), 3 rejected frame(s) since the last report")
    silent = reporter.report(dict(base, frames_rejected=3, silent_cameras=["right"]))
    assert (silent.level, silent.message) == (ERROR, "no frame from camera(s) right: no complete observation, "
                                                     "so no inference")
    assert ("silent_cameras", "right") in silent.values
    assert ("silent_cameras", "none") in reporter.report(base).values
